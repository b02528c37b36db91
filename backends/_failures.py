"""How a failure becomes an error of the tree in :mod:`backends.errors`, with the server's text made safe.

The one place that maps what went wrong talking to a model server: an aiohttp or socket
exception (:func:`translate`), a non-2xx answer (:func:`status_error`, with the server's own
message and its ``Retry-After``), a 2xx that is not the API's (:func:`check_content_type`),
a stream that ended early (:func:`incomplete`). No aiohttp exception escapes and none is
chained (its repr carries the request headers, ``Authorization`` included). URLs are shown
through :func:`~backends.errors.redact_url`; server text through the backend's
``shown_text``, which redacts every form of its credentials (:class:`Secrets`) and
neutralises the rest (:func:`~backends.errors.server_text`).

What it needs from the backend is :class:`Server`: its names, its hints, ``shown_text``.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import math
import random
import re
import time
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote, quote_plus, unquote

import aiohttp
import attrs
from yarl import URL

from backends.errors import (
    AuthenticationError,
    BackendError,
    BackendStatusError,
    BackendUnreachableError,
    BadRequestError,
    ConnectTimeoutError,
    IncompleteStreamError,
    ModelNotFoundError,
    ProtocolError,
    RateLimitError,
    RedirectError,
    ServerError,
    UnexpectedContentTypeError,
    redact_url,
)

__all__ = [
    "ERROR_BODY_LIMIT",
    "MAX_RETRY_WAIT",
    "RETRY_STATUSES",
    "Secrets",
    "Server",
    "check_content_type",
    "hint_request",
    "incomplete",
    "named_fields",
    "parse_retry_after",
    "retry_wait",
    "retryable",
    "server_error_text",
    "status_error",
    "translate",
]

ERROR_BODY_LIMIT = 64 * 1024
"""Bytes of an error response read to find the server's message."""

RETRY_STATUSES = frozenset({429, 502, 503, 504})
"""Statuses retried (when ``retries`` > 0): the server did not start the generation."""

MAX_RETRY_WAIT = 60.0
"""The longest wait before a retry; a ``Retry-After`` above it fails at once instead."""

_CONTENT_TYPES = frozenset(
    {
        "text/event-stream",
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/json",
        "text/json",
        "text/plain",
    }
)
"""Content types a 2xx answer may carry (``*+json`` too; none at all is accepted)."""


class Server(Protocol):
    """What the translation needs to know of the backend that failed."""

    @property
    def provider(self) -> str:
        """The provider's short name (``"ollama"``, ``"openai"``)."""

    @property
    def provider_name(self) -> str:
        """The provider as said in messages."""

    @property
    def base_url(self) -> str:
        """The server's URL as shown (redacted)."""

    @property
    def connect_timeout(self) -> float | None:
        """Seconds to open a connection."""

    @property
    def endpoint_kind(self) -> str:
        """What the URL should be, as said in errors."""

    def shown_text(self, text: str, limit: int = ...) -> str:
        """Server-provided *text* as shown: secrets redacted, neutralised, truncated."""

    def hint_unreachable(self) -> str:
        """What to do when the server does not accept connections."""

    def hint_model_not_found(self) -> str:
        """What to do when the server does not have the model."""

    def hint_auth(self) -> str:
        """What to do on 401/403."""

    def hint_wire_format(self) -> str:
        """What to check when the response is not in the expected format."""

    def is_model_not_found(self, status: int, server_message: str) -> bool:
        """Whether an error status means the model is missing."""


async def check_content_type(server: Server, response: aiohttp.ClientResponse, shown: str) -> None:
    """Refuse a 2xx answer that is not the API's (an HTML page from a proxy or a portal)."""
    content_type = response.headers.get("Content-Type", "")
    mime = content_type.partition(";")[0].strip().lower()
    if not mime or mime in _CONTENT_TYPES or mime.endswith("+json"):
        return
    try:
        head = await response.content.read(512)
    except (aiohttp.ClientError, OSError, ValueError):
        head = b""
    said = server.shown_text(head.decode("utf-8", errors="replace"))
    raise UnexpectedContentTypeError(
        f"{server.provider_name} at {shown} answered {response.status} with Content-Type "
        f"{server.shown_text(content_type, 80)!r}{f' ({said})' if said else ''}: this URL is not "
        f"{server.endpoint_kind} endpoint (a proxy, a login page or another web server answered). "
        f"{server.hint_wire_format()}",
        content_type=server.shown_text(content_type, 80),
        url=shown,
        provider=server.provider,
    )


def translate(
    server: Server, exc: BaseException, shown: str, kept: int | None, answered: bool
) -> BackendError:
    """The :class:`BackendError` for an aiohttp or socket error (the one place that maps them).

    *kept*: the deltas parsed so far (``None`` before a body was read); *answered*: the
    response headers had arrived. The original exception is described,
    sanitised, in ``cause``; it is never chained.
    """
    cause = f"{type(exc).__name__}: {server.shown_text(str(exc))}"
    error: BackendError
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        reason = server.shown_text(os_error.strerror or str(os_error) or type(os_error).__name__)
        error = BackendUnreachableError(
            f"Cannot reach {server.provider_name} at {shown} ({reason}). {server.hint_unreachable()}",
            url=shown,
            provider=server.provider,
        )
    elif isinstance(exc, TimeoutError) and not answered:
        error = ConnectTimeoutError(
            f"Connecting to {server.provider_name} at {shown} took longer than {server.connect_timeout} s. "
            f"{server.hint_unreachable()} Raise connect_timeout= if the server is slow to accept.",
            timeout=server.connect_timeout or 0.0,
            url=shown,
            provider=server.provider,
        )
    elif isinstance(exc, aiohttp.ClientResponseError):
        # aiohttp could not parse the response: a bad status line, a header over its
        # size limit, a bad chunk size, ... Its message says which.
        error = ProtocolError(
            f"{server.provider_name} at {shown} did not answer with valid HTTP "
            f"({server.shown_text(exc.message)}). {server.hint_wire_format()}",
            url=shown,
            provider=server.provider,
        )
    elif isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError)):
        if answered and kept is not None:
            error = incomplete(
                server, shown, kept, "closed the connection mid-stream (or sent a broken body)"
            )
        else:
            error = BackendUnreachableError(
                f"{server.provider_name} at {shown} closed the connection before answering "
                f"({server.shown_text(str(exc) or type(exc).__name__)}). {server.hint_unreachable()}",
                url=shown,
                provider=server.provider,
            )
    else:
        error = BackendError(
            f"The request to {server.provider_name} at {shown} failed after {kept or 0} deltas "
            f"({cause}). {server.hint_wire_format()}",
            url=shown,
            provider=server.provider,
        )
    error.cause = cause
    return error


async def status_error(
    server: Server, response: aiohttp.ClientResponse, url: str, body: Mapping[str, Any]
) -> BackendStatusError:
    """The error for a non-2xx response, with the server's own message (neutralised).

    A message that names a field of the request *body* is about the request, whatever the
    status: its hint says to change the request, never to retry it.
    """
    status = response.status
    try:
        raw = await response.content.read(ERROR_BODY_LIMIT)
    except (aiohttp.ClientError, OSError, ValueError):
        raw = b""
    server_message = server.shown_text(server_error_text(raw) or (response.reason or ""))
    said = f": {server_message}" if server_message else ""
    where = f"{server.provider_name} at {url} answered {status}{said}."
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    common: dict[str, Any] = {
        "status": status,
        "server_message": server_message,
        "url": url,
        "provider": server.provider,
    }
    if 300 <= status < 400:
        location = server.shown_text(redact_url(response.headers.get("Location", "")))
        return RedirectError(
            f"{server.provider_name} at {url} answered {status}, redirecting to "
            f"{location or '(no Location header)'}. Generation requests do not follow redirects "
            f"(that would re-send the prompt and credentials elsewhere): set base_url to the "
            f"server's final address. {server.hint_wire_format()}",
            location=location,
            **common,
        )
    if status in (401, 403):
        return AuthenticationError(f"{where} {server.hint_auth()}", **common)
    if server.is_model_not_found(status, server_message):
        return ModelNotFoundError(f"{where} {server.hint_model_not_found()}", **common)
    if status == 429:
        wait = f"retry after {retry_after:g} s" if retry_after is not None else "retry later"
        return RateLimitError(
            f"{where} Rate limited: {wait}, or lower the number of concurrent generations "
            f"(retries= on the backend retries automatically).",
            retry_after=retry_after,
            **common,
        )
    refused = named_fields(server_message, body)
    if refused and status >= 500:
        return ServerError(f"{where} {hint_request(refused)}", retry_after=retry_after, **common)
    if refused and status != 404:
        return BadRequestError(f"{where} {hint_request(refused)}", **common)
    if status >= 500:
        wait = f" (it asked to retry after {retry_after:g} s)" if retry_after is not None else ""
        return ServerError(
            f"{where} The server failed{wait}; check its log, then retry.",
            retry_after=retry_after,
            **common,
        )
    if status == 404:
        return BadRequestError(
            f"{where} No such endpoint: check base_url ({server.base_url}). {server.hint_wire_format()}",
            **common,
        )
    return BadRequestError(f"{where} The server rejected the request; check the model options.", **common)


def incomplete(
    server: Server, url: str, kept: int, detail: str, cause: str | None = None
) -> IncompleteStreamError:
    """An :class:`IncompleteStreamError` saying how much arrived (*kept* deltas) before the end."""
    error = IncompleteStreamError(
        f"{server.provider_name} at {url} {detail} after {kept} deltas, "
        f"before the stream's terminal frame; the text received so far is kept on the thunk. "
        f"Check the server's log; a prompt longer than its context window often ends a stream this way.",
        url=url,
        provider=server.provider,
    )
    error.cause = cause
    return error


_GENERIC_FIELDS = frozenset({"model", "messages", "stream", "options", "stop"})
"""Request fields whose names are common words in servers' messages about anything."""


def named_fields(server_message: str, body: Mapping[str, Any]) -> list[str]:
    """The fields of the request *body* that *server_message* names (common words aside)."""
    return [
        key
        for key in body
        if key not in _GENERIC_FIELDS and re.search(rf"(?<![\w.]){re.escape(key)}(?!\w)", server_message)
    ]


def hint_request(fields: list[str]) -> str:
    """What to do when the server refused a part of the request: change it (sending it again fails again)."""
    named = ", ".join(fields)
    return (
        f"The server refused the request's {named}: change what sets it (the model options, format=, "
        f"or the backend's settings for this server); sending the same request again fails the same way."
    )


def retryable(error: BackendError) -> bool:
    """Whether *error* means the server did not start the generation, so sending again is safe."""
    if isinstance(error, (BackendUnreachableError, ConnectTimeoutError)):
        return True
    return isinstance(error, BackendStatusError) and error.status in RETRY_STATUSES


LONG_SECRET = 8
"""A secret form this long is redacted wherever it appears; a shorter one only as a whole token."""

_BEFORE_TOKEN = r"(?<!\w)(?<!\w['-])"
_AFTER_TOKEN = r"(?!\w)(?!['-]\w)"
"""A whole token: no word character beside it, nor an apostrophe or hyphen joining it to one
(``it's``, ``x-ray``), so that a one-letter key never turns a word into ``te***t``."""


@attrs.frozen
class Secrets:
    """Every form in which the client sends its credentials, to redact from what a server says.

    A server may echo what it received anywhere it writes text (an error body, a reason
    phrase, an error frame, a malformed line, a header): the raw API key or password, the
    ``Authorization: Basic`` base64 of ``user:password``, the URL-encoded or JSON-escaped
    spellings. :meth:`redact` replaces each of them with ``***``: a form of
    :data:`LONG_SECRET` characters or more wherever it appears, a shorter one (``api_key="x"``,
    common with local servers that ignore keys) only where it stands as a whole token.
    """

    forms: tuple[str, ...] = ()
    """The spellings to redact, longest first."""
    _pattern: re.Pattern[str] | None = attrs.field(init=False, repr=False, eq=False)

    @_pattern.default
    def _compile(self) -> re.Pattern[str] | None:
        long = [re.escape(form) for form in self.forms if len(form) >= LONG_SECRET]
        short = [re.escape(form) for form in self.forms if len(form) < LONG_SECRET]
        if short:
            long.append(f"{_BEFORE_TOKEN}(?:{'|'.join(short)}){_AFTER_TOKEN}")
        return re.compile("|".join(long)) if long else None

    @classmethod
    def of(cls, *, url: str = "", api_key: str | None = None) -> Secrets:
        """The forms of the credentials in *url* (``user:password@``, sent as basic auth) and of *api_key*."""
        found: set[str] = set()
        userinfo = _userinfo(url)
        if userinfo:
            password = userinfo.partition(":")[2]
            auth = aiohttp.BasicAuth.from_url(URL(url))
            found |= {userinfo, unquote(userinfo), password, unquote(password)}
            if auth is not None:
                found |= _spellings(f"{auth.login}:{auth.password}") | _spellings(auth.password)
                with contextlib.suppress(UnicodeEncodeError):  # not latin-1: aiohttp cannot send it either
                    found.add(auth.encode().partition(" ")[2])  # what the Authorization header carries
        if api_key:
            found |= _spellings(api_key)
        return cls(tuple(sorted((f for f in found if f), key=lambda f: (-len(f), f))))

    def __add__(self, other: Secrets) -> Secrets:
        return Secrets(tuple(sorted(set(self.forms) | set(other.forms), key=lambda f: (-len(f), f))))

    def redact(self, text: str) -> str:
        """*text* with every form of the secrets replaced by ``***``."""
        return text if self._pattern is None else self._pattern.sub("***", text)


def _spellings(secret: str) -> set[str]:
    """*secret* as sent, URL-encoded (path and form style) and JSON-escaped."""
    if not secret:
        return set()
    return {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}


def _userinfo(url: str) -> str:
    """The ``user:password`` written into *url*, or ``""``."""
    _, sep, rest = url.partition("://")
    authority = rest.split("/", 1)[0] if sep else ""
    userinfo, at, _ = authority.rpartition("@")
    return userinfo if at else ""


def retry_wait(retry_backoff: float, attempt: int, error: BackendError) -> float | None:
    """Seconds to wait before retry *attempt* + 1 (exponential, jittered, at least Retry-After)."""
    backoff = min(MAX_RETRY_WAIT, retry_backoff * 2.0**attempt)
    wait = backoff / 2 + random.uniform(0, backoff / 2)
    retry_after = error.retry_after if isinstance(error, BackendStatusError) else None
    if retry_after is not None:
        if retry_after > MAX_RETRY_WAIT:
            return None
        wait = max(wait, retry_after)
    return wait


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or ``None``."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def server_error_text(raw: bytes) -> str:
    """The error message in an error body: ``{"error": "..."}`` (Ollama),
    ``{"error": {"message": ...}}`` (OpenAI), ``{"detail": ...}`` / ``{"message": ...}``, or the text."""
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        obj = json.loads(text)
    except ValueError:
        return text
    if isinstance(obj, dict):
        error = obj.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
        for key in ("detail", "message"):
            if isinstance(obj.get(key), str):
                return str(obj[key])
    return text
