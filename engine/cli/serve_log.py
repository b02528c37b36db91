"""The log lines of ``rxllm serve`` on standard error: text (default) or one JSON object per line.

JSON (``--log-format json``) is for log shippers: each record is an object with ``time``
(ISO 8601, UTC), ``level``, ``logger`` and ``message``; a chat request's record adds
``method``, ``path``, ``status``, ``duration`` (seconds), ``stream`` and ``failed_check``
(``null`` or ``{"requirement", "reason", "stage"}``); a record with an exception adds
``exception`` (its traceback as text).
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any, TextIO

__all__ = ["LOG_FORMATS", "JsonLines", "log_to"]

LOG_FORMATS = ("text", "json")

REQUEST_FIELDS = ("method", "path", "status", "duration", "stream", "failed_check")
"""The attributes the gateway puts on a request's record (``extra=``), copied into its JSON object."""

LOGGERS = ("engine", "backends", "operators", "aiohttp")
"""The top-level loggers whose records reach the handler: rxllm's packages, and aiohttp's server errors."""


class JsonLines(logging.Formatter):
    """Formats a record as one line of JSON (no newline inside: the message is escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        entry: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in REQUEST_FIELDS:
            if field in record.__dict__:
                entry[field] = record.__dict__[field]
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def log_to(stream: TextIO, *, log_format: str = "text", verbose: bool = False) -> logging.Handler:
    """Send the records of rxllm's loggers (and aiohttp's) to *stream* in *log_format*.

    The gateway's records (one per request, its start) at INFO; everything else at WARNING,
    or at DEBUG with *verbose* (the backends' requests, retries, cancels). Returns the handler.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log_format must be one of {', '.join(map(repr, LOG_FORMATS))}, got {log_format!r}")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        JsonLines() if log_format == "json" else logging.Formatter("rxllm serve: %(message)s")
    )
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if verbose and name != "aiohttp" else logging.WARNING)
    for name in ("engine.gateway", "engine.cli.serve"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    return handler
