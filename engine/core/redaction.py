"""Credentials out of text that leaves the process: span attributes, metric labels, log records.

Imports nothing of OpenTelemetry, so the log records of a process without it redact the
same way its spans would.
"""

from __future__ import annotations

import re

__all__ = ["MAX_MESSAGE", "redact"]

_SECRETS = re.compile(
    r"(?i)(bearer\s+)[^\s\"',]+|\b(sk|pk|rk)-[A-Za-z0-9_\-]{8,}|"
    r"((?:api[_-]?key|token|secret|password|authorization)[\"']?\s*[:=]\s*[\"']?)[^\s\"',&]+"
)
MAX_MESSAGE = 500


def redact(text: str) -> str:
    """*text* with anything that looks like a credential replaced by ``***``, cut to 500 characters."""

    def hide(match: re.Match[str]) -> str:
        keep = match.group(1) or match.group(3) or ""
        return f"{keep}***"

    cleaned = _SECRETS.sub(hide, text)
    return cleaned if len(cleaned) <= MAX_MESSAGE else cleaned[: MAX_MESSAGE - 1] + "…"
