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
│   └── IdleTimeoutError           no delta (or no response) for idle_timeout seconds
├── BackendStatusError             any non-2xx answer; .status, .server_message
│   ├── AuthenticationError        401 / 403
│   ├── ModelNotFoundError         404 naming a model (or Ollama's "not found")
│   ├── RateLimitError             429; .retry_after (seconds) from Retry-After
│   ├── ServerError                5xx, or an error frame sent inside a 200 stream
│   └── BadRequestError            any other 4xx
└── BackendProtocolError           the response is not the wire format it should be
    ├── MalformedStreamError       a line or event that does not parse; .line (truncated)
    └── IncompleteStreamError      the stream ended before its terminal frame
```
"""

from __future__ import annotations

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
    "RateLimitError",
    "ServerError",
    "truncate",
]

QUOTE_LIMIT = 200
"""Characters of a server's text (an error body, a malformed line) quoted in a message."""


def truncate(text: str, limit: int = QUOTE_LIMIT) -> str:
    """*text* cut to *limit* characters, with a note saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


class BackendError(Exception):
    """A model server could not produce (all of) a generation.

    ``url`` is the endpoint that failed (never with credentials), ``provider`` the
    backend's provider name (``"ollama"``, ``"openai"``).
    """

    def __init__(self, message: str, *, url: str | None = None, provider: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.url = url
        self.provider = provider

    def __str__(self) -> str:
        return self.message


class BackendUnreachableError(BackendError):
    """The server did not accept a connection (refused, unknown host, network down)."""


class BackendTimeoutError(BackendError):
    """The server was too slow; ``timeout`` is the limit in seconds that ran out."""

    def __init__(
        self, message: str, *, timeout: float, url: str | None = None, provider: str | None = None
    ) -> None:
        super().__init__(message, url=url, provider=provider)
        self.timeout = timeout


class ConnectTimeoutError(BackendTimeoutError):
    """Opening the TCP connection took longer than ``connect_timeout``."""


class IdleTimeoutError(BackendTimeoutError):
    """No response headers, or no next delta, within ``idle_timeout`` seconds."""


class BackendStatusError(BackendError):
    """The server answered with an error status; ``server_message`` is its own error text."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        server_message: str = "",
        url: str | None = None,
        provider: str | None = None,
    ) -> None:
        super().__init__(message, url=url, provider=provider)
        self.status = status
        self.server_message = server_message


class AuthenticationError(BackendStatusError):
    """401 or 403: the API key is missing, wrong, or not allowed to use this model."""


class ModelNotFoundError(BackendStatusError):
    """The server does not have the requested model."""


class RateLimitError(BackendStatusError):
    """429: too many requests. ``retry_after`` is the server's Retry-After in seconds, if it sent one."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        retry_after: float | None,
        server_message: str = "",
        url: str | None = None,
        provider: str | None = None,
    ) -> None:
        super().__init__(message, status=status, server_message=server_message, url=url, provider=provider)
        self.retry_after = retry_after


class ServerError(BackendStatusError):
    """5xx, or an error the server reported inside a stream that had started (``status`` 200)."""


class BadRequestError(BackendStatusError):
    """Another 4xx: the server rejected the request (unknown option, prompt too long, ...)."""


class BackendProtocolError(BackendError):
    """The response does not follow the wire format the backend speaks."""


class MalformedStreamError(BackendProtocolError):
    """A stream line or event that does not parse; ``line`` is the offending text, truncated."""

    def __init__(
        self, message: str, *, line: str, url: str | None = None, provider: str | None = None
    ) -> None:
        super().__init__(message, url=url, provider=provider)
        self.line = line


class IncompleteStreamError(BackendProtocolError):
    """The stream ended (the server closed it, or the body ended) before its terminal frame."""
