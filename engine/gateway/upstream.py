"""Upstream failures as the gateway's answers: OpenAI's error shape and a fitting status.

The upstream's 4xx that are the caller's fault (a prompt the model rejects, too many
requests) keep their status and the server's own message; everything else is the
gateway's or the upstream's problem: 502 (504 for a timeout), with a message that names
the kind of failure but not the upstream's address. The full (already redacted) message
goes to the gateway's log.
"""

from __future__ import annotations

import attrs

from backends.errors import (
    BackendError,
    BackendStatusError,
    BackendTimeoutError,
    BackendUnreachableError,
    BadRequestError,
    RateLimitError,
)
from engine.gateway.wire import RequestError

__all__ = ["UpstreamFailure", "failure_of"]


@attrs.frozen
class UpstreamFailure:
    """What the client is told (:attr:`request_error`) and what the log says (:attr:`log_line`)."""

    request_error: RequestError
    log_line: str


def failure_of(exc: BaseException) -> UpstreamFailure:
    """The answer to a run that ended with *exc*."""
    line = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, BadRequestError) and exc.status is not None and exc.status != 404:
        message = f"the model server rejected the request: {exc.server_message or 'no reason given'}"
        return UpstreamFailure(
            RequestError(exc.status, message, type="invalid_request_error", code="upstream_rejected"), line
        )
    if isinstance(exc, RateLimitError):
        return UpstreamFailure(
            RequestError(
                429,
                "the model server is rate limiting requests; retry later",
                type="rate_limit_error",
                code="rate_limited",
            ),
            line,
        )
    if isinstance(exc, BackendTimeoutError):
        return UpstreamFailure(
            RequestError(
                504,
                f"the model server did not answer in time ({type(exc).__name__})",
                type="timeout",
                code="upstream_timeout",
            ),
            line,
        )
    if isinstance(exc, BackendUnreachableError):
        return UpstreamFailure(
            RequestError(
                502, "the model server cannot be reached", type="upstream_error", code="upstream_unreachable"
            ),
            line,
        )
    if isinstance(exc, BackendStatusError):
        what = (
            f"answered {exc.status}" if exc.status and exc.status != 200 else "reported an error mid-stream"
        )
        return UpstreamFailure(
            RequestError(
                502,
                f"the model server {what} ({type(exc).__name__})",
                type="upstream_error",
                code="upstream_error",
            ),
            line,
        )
    if isinstance(exc, BackendError):
        return UpstreamFailure(
            RequestError(
                502,
                f"the model server failed ({type(exc).__name__})",
                type="upstream_error",
                code="upstream_error",
            ),
            line,
        )
    return UpstreamFailure(
        RequestError(
            500,
            f"the gateway failed ({type(exc).__name__}); see its log",
            type="server_error",
            code="internal_error",
        ),
        line,
    )
