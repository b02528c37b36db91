"""The errors HTTP backends raise: each names the server's URL, what went wrong, and the fix.

Every class derives from :class:`BackendError`, so ``except BackendError`` catches any
failure of a model server. An error raised during a streaming generation fails the
thunk *after* every delta that arrived before it: ``thunk.text`` and ``thunk.value``
keep that text, and ``stream_with_chunking`` validates and delivers it before it
reports the error.

```
BackendError
├── BackendUnreachableError        connection refused, DNS failure, reset while connecting
├── BackendTimeoutError
│   ├── ConnectTimeoutError        the TCP connection took longer than connect_timeout
│   ├── IdleTimeoutError           no delta (or no response) for idle_timeout seconds
│   └── RequestTimeoutError        the whole request took longer than timeout
├── BackendStatusError             any non-2xx answer; .status, .server_message, .retry_after
│   ├── AuthenticationError        401 / 403
│   ├── ModelNotFoundError         404 naming a model (or Ollama's "not found")
│   ├── RateLimitError             429; .retry_after (seconds) from Retry-After
│   ├── ServerError                5xx, or an error frame sent inside a 200 stream
│   ├── RedirectError              3xx (redirects are not followed); .location (redacted)
│   └── BadRequestError            any other 4xx
└── BackendProtocolError           the response is not the wire format it should be
    ├── ProtocolError              not valid HTTP (bad status line, header too large, bad chunking)
    ├── UnexpectedContentTypeError a 2xx whose Content-Type is not the API's (an HTML page)
    ├── MalformedStreamError       a line or event that does not parse, or is too large; .line
    └── IncompleteStreamError      the stream ended before its terminal frame
```

What a server sends is never shown raw: every URL shown goes through :func:`redact_url`
(credentials replaced by ``***``) and every piece of server text through
:func:`server_text` (terminal escapes and control characters neutralised, length
bounded). A low-level (aiohttp, socket) exception is never chained as ``__cause__`` or
``__context__`` (its repr carries the request headers); ``cause`` keeps a sanitised
one-line description of it instead.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "AuthenticationError",
    "BackendError",
    "BackendProtocolError",
    "BackendStatusError",
    "BackendTimeoutError",
    "BackendUnreachableError",
    "BadRequestError",
    "ConnectTimeoutError",
    "IdleTimeoutError",
    "IncompleteStreamError",
    "MalformedStreamError",
    "ModelNotFoundError",
    "ProtocolError",
    "RateLimitError",
    "RedirectError",
    "RequestTimeoutError",
    "ServerError",
    "UnexpectedContentTypeError",
    "redact_url",
    "server_text",
    "truncate",
]

QUOTE_LIMIT = 200
"""Characters of a server's text (an error body, a malformed line) quoted in a message."""

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s?#]*@")
_SECRET_QUERY = re.compile(
    r"(?i)([?&;](?:api[-_]?key|key|token|access[-_]?token|secret|password|passwd|sig|signature|auth)=)[^&;#\s]*"
)
# ESC-introduced sequences (CSI with its parameters, OSC/DCS/APC/PM/SOS up to their
# terminator, two-byte escapes) and their 8-bit C1 forms: dropped whole, so that none
# of their parameter bytes reach a terminal either.
_TERMINAL_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -~]?"
)
_WHITESPACE = re.compile(r"[\t\n\r\v\f\x85\u2028\u2029]+")


def redact_url(text: str) -> str:
    """*text* (a URL, or a message that contains URLs) with credentials replaced by ``***``.

    The user and password of ``scheme://user:password@host`` and the values of
    secret-looking query parameters (``key=``, ``api_key=``, ``token=``, ``sig=``...)
    are replaced; the rest of the URL stays readable. Every URL this package shows
    (``repr``, error messages, ``.url`` attributes, log records) goes through here.
    """
    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(r"\1***@", text))


def server_text(text: str, limit: int = QUOTE_LIMIT) -> str:
    """Text a server sent, made safe to show: neutralised, on one line, at most *limit* characters.

    Terminal escape sequences (ESC/CSI/OSC, their C1 forms) are dropped; line breaks
    and tabs become one space; any other control or invisible formatting character
    (BEL, NUL, DEL, bidi overrides, ...) is shown escaped (``\\x07``, ``\\u202e``).
    """
    text = text[: limit * 4 + 64]  # bounded work for a huge body; the cut is reported below
    cleaned = _WHITESPACE.sub(" ", _TERMINAL_SEQUENCE.sub("", text))
    out = "".join(ch if unicodedata.category(ch) not in _HIDDEN else _escape(ch) for ch in cleaned)
    return truncate(out.strip(), limit)


_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def truncate(text: str, limit: int = QUOTE_LIMIT) -> str:
    """*text* cut to *limit* characters, with a note saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


class BackendError(Exception):
    """A model server could not produce (all of) a generation.

    ``url`` is the endpoint that failed (never with credentials), ``provider`` the
    backend's provider name (``"ollama"``, ``"openai"``). ``cause`` is a sanitised
    one-line description of the low-level error behind it (the aiohttp or socket
    exception, which is not chained because its repr carries the request headers),
    or ``None``.
    """

    def __init__(
        self, message: str, *, url: str | None = None, provider: str | None = None, cause: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.url = redact_url(url) if url is not None else None
        self.provider = provider
        self.cause = cause

    def __str__(self) -> str:
        return self.message


class BackendUnreachableError(BackendError):
    """The server did not accept a connection (refused, unknown host, network down, reset)."""


class BackendTimeoutError(BackendError):
    """The server was too slow; ``timeout`` is the limit in seconds that ran out."""

    def __init__(
        self,
        message: str,
        *,
        timeout: float,
        url: str | None = None,
        provider: str | None = None,
        cause: str | None = None,
    ) -> None:
        super().__init__(message, url=url, provider=provider, cause=cause)
        self.timeout = timeout


class ConnectTimeoutError(BackendTimeoutError):
    """Opening the TCP connection took longer than ``connect_timeout``."""


class IdleTimeoutError(BackendTimeoutError):
    """No response headers, or no next delta, within ``idle_timeout`` seconds."""


class RequestTimeoutError(BackendTimeoutError):
    """The whole request (retries and waits included) took longer than ``timeout`` seconds."""


class BackendStatusError(BackendError):
    """The server answered with an error status; ``server_message`` is its own error text
    (neutralised and truncated). ``retry_after`` is the server's ``Retry-After`` in
    seconds, if it sent one."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        server_message: str = "",
        retry_after: float | None = None,
        url: str | None = None,
        provider: str | None = None,
        cause: str | None = None,
    ) -> None:
        super().__init__(message, url=url, provider=provider, cause=cause)
        self.status = status
        self.server_message = server_message
        self.retry_after = retry_after


class AuthenticationError(BackendStatusError):
    """401 or 403: the API key is missing, wrong, or not allowed to use this model."""


class ModelNotFoundError(BackendStatusError):
    """The server does not have the requested model."""


class RateLimitError(BackendStatusError):
    """429: too many requests. ``retry_after`` is the server's Retry-After in seconds, if it sent one."""


class ServerError(BackendStatusError):
    """5xx, or an error the server reported inside a stream that had started (``status`` 200).
    ``retry_after`` is set when a 503 carried ``Retry-After``."""


class RedirectError(BackendStatusError):
    """3xx: the server redirected the request. Generation requests never follow redirects
    (a redirect would re-send the prompt and the credentials elsewhere); ``location`` is
    where it pointed (redacted). Point ``base_url`` at the final address instead."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        location: str,
        server_message: str = "",
        url: str | None = None,
        provider: str | None = None,
    ) -> None:
        super().__init__(message, status=status, server_message=server_message, url=url, provider=provider)
        self.location = location


class BadRequestError(BackendStatusError):
    """Another 4xx: the server rejected the request (unknown option, prompt too long, ...)."""


class BackendProtocolError(BackendError):
    """The response does not follow the wire format the backend speaks."""


class ProtocolError(BackendProtocolError):
    """The response is not valid HTTP: a bad status line, a header over the size limit,
    a bad chunk size. Usually something other than a model server answers at the URL."""


class UnexpectedContentTypeError(BackendProtocolError):
    """A 2xx response whose ``Content-Type`` is not the API's (an HTML page from a proxy
    or a login portal); ``content_type`` is what the server sent."""

    def __init__(
        self, message: str, *, content_type: str, url: str | None = None, provider: str | None = None
    ) -> None:
        super().__init__(message, url=url, provider=provider)
        self.content_type = content_type


class MalformedStreamError(BackendProtocolError):
    """A stream line or event that does not parse, or a line, event or body over its size
    limit; ``line`` is the offending text, neutralised and truncated."""

    def __init__(
        self, message: str, *, line: str, url: str | None = None, provider: str | None = None
    ) -> None:
        super().__init__(message, url=url, provider=provider)
        self.line = line


class IncompleteStreamError(BackendProtocolError):
    """The stream ended (the server closed it, or the body ended) before its terminal frame."""
