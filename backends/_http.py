"""Plumbing shared by the HTTP backends: pooled sessions, the generation task, error mapping.

:class:`HttpBackend` keeps one ``aiohttp.ClientSession`` per event loop (created
lazily on the running loop, shared by every generation on that loop, closed when
that loop shuts down or by ``aclose()``), so one backend serves a sync twin's loop,
then ``asyncio.run(...)``, then another ``asyncio.run(...)``. Each generation runs as
an async generator read by :func:`engine.core.asyncrx.from_async_iterable`. A
subclass supplies only the wire format: the request it sends
(:meth:`HttpBackend._request`), a :class:`StreamParser` for the body, and the
provider-specific hints that go into error messages.

Every failure becomes a :class:`~backends.errors.BackendError` here, in
:meth:`HttpBackend._translate` (aiohttp and socket errors) and
:meth:`HttpBackend._status_error` (non-2xx answers); no aiohttp exception escapes and
none is chained (its repr carries the request headers, ``Authorization`` included).
URLs are shown through :func:`~backends.errors.redact_url` and server text through
:func:`~backends.errors.server_text`.

Cancellation: disposing the thunk's subscription (``thunk.cancel()``, or the pipeline's
cancel-on-fail) first closes the HTTP response synchronously, in the disposing call,
which closes its TCP connection (a half-read connection never goes back to the pool),
then cancels the reading task (or, from inside a delta callback, lets it close the
generator). ``generation.connection_closed_at`` records the close and
``generation.cancelled_at`` when the reading task saw the cancellation.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import random
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Mapping
from types import TracebackType
from typing import Any, ClassVar, TypedDict
from urllib.parse import unquote

import aiohttp
from reactivex import Observable, abc
from reactivex.disposable import Disposable

from backends.errors import (
    AuthenticationError,
    BackendError,
    BackendStatusError,
    BackendUnreachableError,
    BadRequestError,
    ConnectTimeoutError,
    IdleTimeoutError,
    IncompleteStreamError,
    MalformedStreamError,
    ModelNotFoundError,
    ProtocolError,
    RateLimitError,
    RedirectError,
    RequestTimeoutError,
    ServerError,
    UnexpectedContentTypeError,
    redact_url,
    server_text,
)
from backends.sse import DEFAULT_MAX_LINE_BYTES
from engine.core.asyncrx import from_async_iterable
from engine.core.components import Message
from engine.core.context import Context
from engine.core.continuation import Continuation
from engine.core.options import ModelOption
from engine.core.thunk import GenerationInfo, ModelOutputThunk

__all__ = [
    "HttpBackend",
    "HttpOptions",
    "StreamParser",
    "chat_messages",
    "json_schema_for",
    "server_error_text",
]

logger = logging.getLogger(__name__)

ERROR_BODY_LIMIT = 64 * 1024
"""Bytes of an error response read to find the server's message."""

DEFAULT_MAX_FRAME_BYTES = DEFAULT_MAX_LINE_BYTES
"""Default cap on one NDJSON line or one server-sent event (8 MiB)."""

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
"""Default cap on a non-streaming response body (64 MiB)."""

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


class HttpOptions(TypedDict, total=False):
    """The connection options every HTTP backend takes (see :class:`HttpBackend`)."""

    connect_timeout: float | None
    idle_timeout: float | None
    timeout: float | None
    max_connections: int | None
    retries: int
    retry_backoff: float
    max_frame_bytes: int
    max_body_bytes: int


class StreamParser(ABC):
    """Turns one response body into text deltas and fills in the generation record.

    ``feed`` gets the body in network-sized pieces; ``close`` is called at the end of
    the body. A streaming body goes to ``_feed`` piece by piece and ends with
    ``_close``; a non-streaming one is buffered here (one copy, at most
    ``max_body_bytes``) and handed whole to ``_close_whole``. All three are generators
    of deltas that raise a :class:`BackendError` where the stream goes wrong (the
    closing ones raise :class:`IncompleteStreamError` if the terminal frame never came).
    The deltas parsed before the error are still returned, and the error is kept in
    ``error`` for the caller to raise after handing them on: text that arrived is never
    lost. ``kept`` counts the deltas returned so far (what error messages report);
    ``frames`` counts protocol frames parsed (keep-alive comments excluded); the idle
    timer restarts whenever it grows.
    """

    def __init__(self, backend: HttpBackend, url: str, generation: GenerationInfo, stream: bool) -> None:
        self.backend = backend
        self.url = url
        self.generation = generation
        self.stream = stream
        self.frames = 0
        self.kept = 0
        self.done = False
        self.error: BackendError | None = None
        self.max_frame_bytes = backend.max_frame_bytes
        self.max_body_bytes = backend.max_body_bytes
        self._body = bytearray()  # a non-streaming body, until close()

    def feed(self, data: bytes) -> list[str]:
        """Parse *data*; return the non-empty deltas it completed (then check ``error``)."""
        if self.error is not None:
            return []
        if not self.stream:
            if len(self._body) + len(data) > self.max_body_bytes:
                head = bytes(self._body[:200] or data[:200])
                self._body = bytearray()
                self.error = self.malformed(
                    f"a response body larger than {self.max_body_bytes} bytes (raise max_body_bytes= "
                    f"if that is expected)",
                    head,
                )
                return []
            self._body += data
            return []
        return self._collect(self._feed(data))

    def close(self) -> list[str]:
        """End of body: return any last deltas (then check ``error``)."""
        if self.error is not None:
            return []
        if self.stream:
            return self._collect(self._close())
        body, self._body = self._body, bytearray()
        return self._collect(self._close_whole(body))

    def _collect(self, deltas: Iterator[str]) -> list[str]:
        out: list[str] = []
        if self.error is not None:
            return out
        try:
            for delta in deltas:
                if delta:
                    out.append(delta)
                    self.kept += 1
        except BackendError as exc:
            self.error = exc
        return out

    @abstractmethod
    def _feed(self, data: bytes) -> Iterator[str]:
        """Yield the deltas *data* completes."""

    @abstractmethod
    def _close(self) -> Iterator[str]:
        """Yield the last deltas of a stream; raise if it is incomplete."""

    @abstractmethod
    def _close_whole(self, body: bytearray) -> Iterator[str]:
        """Yield the deltas of a whole non-streaming *body*; raise if it is incomplete."""

    def malformed(self, what: str, line: bytes | bytearray | str) -> MalformedStreamError:
        """A :class:`MalformedStreamError` quoting *line* (neutralised, truncated)."""
        text = line[:1000].decode("utf-8", errors="replace") if not isinstance(line, str) else line
        quoted = self.backend.shown_text(text)
        return MalformedStreamError(
            f"{self.backend.provider_name} at {self.url} sent {what}: {quoted!r}. "
            f"{self.backend.hint_wire_format()}",
            line=quoted,
            url=self.url,
            provider=self.backend.provider,
        )

    def too_large(self, what: str, limit: int, head: bytes) -> MalformedStreamError:
        """A :class:`MalformedStreamError` for a line or event over ``max_frame_bytes``."""
        return self.malformed(
            f"{what} larger than {limit} bytes (raise max_frame_bytes= if that is expected)", head
        )

    def incomplete(self, detail: str, cause: str | None = None) -> IncompleteStreamError:
        """An :class:`IncompleteStreamError` saying how much arrived before the end."""
        error = IncompleteStreamError(
            f"{self.backend.provider_name} at {self.url} {detail} after {self.kept} deltas, "
            f"before the stream's terminal frame; the text received so far is kept on the thunk. "
            f"Check the server's log; a prompt longer than its context window often ends a stream this way.",
            url=self.url,
            provider=self.backend.provider,
        )
        error.cause = cause
        return error

    def stream_error(self, server_message: str) -> ServerError:
        """A :class:`ServerError` for an error frame sent inside a 200 stream."""
        text = self.backend.shown_text(server_message)
        return ServerError(
            f"{self.backend.provider_name} at {self.url} reported an error after "
            f"{self.kept} deltas: {text}. The text received so far is kept on the thunk.",
            status=200,
            server_message=text,
            url=self.url,
            provider=self.backend.provider,
        )


class HttpBackend(ABC):
    """Base of the HTTP backends: one pooled session per event loop, one task per generation.

    Options (:class:`HttpOptions`, taken by every HTTP backend):

    * ``connect_timeout`` (10 s): seconds to open a TCP connection.
    * ``idle_timeout`` (300 s): the longest wait for the response headers and then
      between two frames of the stream (for a non-streaming request, for the whole
      response).
    * ``timeout`` (none): a deadline for the whole request, retries and waits included.
      ``None`` for any of the three waits forever.
    * ``max_connections`` (no limit): connections open at once per event loop (a
      streaming generation holds one for its whole duration).
    * ``retries`` (0: off): how many times to retry a request that failed *before any
      delta arrived* (a refused, reset or timed-out connection; a 429, 502, 503 or
      504), waiting ``retry_backoff`` (0.5 s) doubled each time, with jitter, or the
      server's ``Retry-After`` when longer (up to 60 s). A generation that has started
      is never retried: it would duplicate text.
    * ``max_frame_bytes`` (8 MiB): the largest NDJSON line or server-sent event;
      ``max_body_bytes`` (64 MiB): the largest non-streaming body. Past either the
      generation fails with :class:`MalformedStreamError`.

    Credentials in ``base_url`` (``http://user:password@host``) are sent as HTTP basic
    auth and shown nowhere: ``base_url``, ``repr()``, errors and logs show ``***``.
    Redirects are not followed (a 3xx is a :class:`RedirectError`).
    """

    provider: ClassVar[str]
    provider_name: ClassVar[str]

    def __init__(
        self,
        model_id: str,
        *,
        base_url: str,
        model_options: Mapping[str, Any] | None = None,
        connect_timeout: float | None = 10.0,
        idle_timeout: float | None = 300.0,
        timeout: float | None = None,
        max_connections: int | None = None,
        retries: int = 0,
        retry_backoff: float = 0.5,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if not model_id:
            raise ValueError(
                f"{type(self).__name__} needs a model name, e.g. {type(self).__name__}('llama3.2')"
            )
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("idle_timeout", idle_timeout),
            ("timeout", timeout),
        ):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds or None, got {value!r}")
        if max_connections is not None and max_connections < 1:
            raise ValueError(f"max_connections must be >= 1 or None, got {max_connections!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an int >= 0 (0 turns retrying off), got {retries!r}")
        if not retry_backoff >= 0:
            raise ValueError(f"retry_backoff must be >= 0 seconds, got {retry_backoff!r}")
        for name, size in (("max_frame_bytes", max_frame_bytes), ("max_body_bytes", max_body_bytes)):
            if not isinstance(size, int) or size < 1:
                raise ValueError(f"{name} must be a positive number of bytes, got {size!r}")
        self.model_id = model_id
        self._root = base_url.rstrip("/")
        self.base_url = redact_url(self._root)
        """The server's URL as shown (credentials replaced by ``***``)."""
        self._secrets = _url_secrets(self._root)
        self.model_options: dict[str, Any] = dict(model_options or {})
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.timeout = timeout
        self.max_connections = max_connections
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.max_frame_bytes = max_frame_bytes
        self.max_body_bytes = max_body_bytes
        self.generations: list[GenerationInfo] = []
        """One record per generation started, oldest first (the last 1000 are kept)."""
        self._pools: dict[asyncio.AbstractEventLoop, _Pool] = {}
        self._latest: aiohttp.ClientSession | None = None
        self._closed = False
        self._live: set[_Connection] = set()

    # -- subclass hooks ----------------------------------------------------------

    @abstractmethod
    def _request(
        self, action: Any, ctx: Context, options: dict[str, Any], format: type | None, stream: bool
    ) -> tuple[str, dict[str, Any]]:
        """The URL (under ``self._root``, the unredacted base URL) and JSON body of one request."""

    @abstractmethod
    def _parser(self, url: str, generation: GenerationInfo, stream: bool) -> StreamParser:
        """A fresh parser for one response body (*url* is the redacted URL, for messages)."""

    # -- for the subclasses' _request --------------------------------------------

    def _chat_body(
        self, action: Any, ctx: Context, options: Mapping[str, Any], stream: bool
    ) -> dict[str, Any]:
        """The fields every chat request starts with: ``model``, ``messages`` (the system prompt
        first, if the options give one) and ``stream``."""
        return {
            "model": self.model_id,
            "messages": chat_messages(action, ctx, options.get(ModelOption.SYSTEM_PROMPT)),
            "stream": stream,
        }

    def _wire_options(self, options: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
        """The model options as the server names them, in their order.

        A :class:`~engine.core.options.ModelOption` in *names* takes the server's name (and is
        left out when ``None``); ``STREAM`` and ``SYSTEM_PROMPT`` are left out (the request
        itself carries them); another ``@@@`` option is left out with a warning; any other key
        passes as it is.
        """
        wire: dict[str, Any] = {}
        for key, value in options.items():
            if key in names:
                if value is not None:
                    wire[names[key]] = value
            elif key in (ModelOption.STREAM, ModelOption.SYSTEM_PROMPT):
                continue
            elif key.startswith("@@@"):
                ModelOption.warn_ignored(key, type(self).__name__)
            else:
                wire[key] = value
        return wire

    def _headers(self, stream: bool) -> dict[str, str]:
        """Request headers (a subclass adds its credentials)."""
        return {"Content-Type": "application/json", "User-Agent": "rxllm"}

    def redact(self, text: str) -> str:
        """*text* with every secret the backend holds (URL credentials, API key) replaced by ``***``."""
        text = redact_url(text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def shown_text(self, text: str) -> str:
        """Server-provided *text* as shown in errors: secrets redacted, neutralised, truncated."""
        return server_text(self.redact(text))

    @abstractmethod
    def hint_unreachable(self) -> str:
        """What to do when the server does not accept connections."""

    @abstractmethod
    def hint_model_not_found(self) -> str:
        """What to do when the server does not have the model."""

    @abstractmethod
    def hint_auth(self) -> str:
        """What to do on 401/403."""

    def hint_wire_format(self) -> str:
        """What to check when the response is not in the expected format."""
        return f"Check that base_url ({self.base_url}) points at a {self.provider_name} server."

    def is_model_not_found(self, status: int, server_message: str) -> bool:
        """Whether an error status means the model is missing."""
        lowered = server_message.lower()
        return status == 404 and "model" in lowered

    # -- the Backend protocol --------------------------------------------------------

    async def generate_from_context(
        self,
        action: Any,
        ctx: Context,
        *,
        format: type | None = None,
        model_options: dict[str, Any] | None = None,
    ) -> tuple[ModelOutputThunk[str], Context]:
        """Send the request now (an asyncio task) and return the lazy thunk and the new context."""
        options = ModelOption.merge(self.model_options, model_options)
        stream = bool(options.get(ModelOption.STREAM, False))
        url, body = self._request(action, ctx, options, format, stream)
        session = self._ensure_session()
        generation = GenerationInfo(model=self.model_id, provider=self.provider)
        generation.extra["url"] = redact_url(url)
        generation.extra["streaming"] = stream
        self.generations.append(generation)
        if len(self.generations) > 1000:
            del self.generations[:-1000]
        payload = json.dumps(body, ensure_ascii=False).encode()

        def subscribe(
            observer: abc.ObserverBase[str], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            live = _Connection(generation)
            reader = from_async_iterable(
                lambda: self._produce(session, url, payload, generation, stream, live)
            )
            subscription = reader.subscribe(observer, scheduler=scheduler)

            def dispose() -> None:
                live.disposed = True
                live.close_now()  # closes the socket in this call, before the reading task even runs
                subscription.dispose()

            return Disposable(dispose)

        source: Observable[str] = Observable(subscribe)
        thunk: ModelOutputThunk[str] = ModelOutputThunk(source, generation=generation)
        return thunk, ctx.add(action).add(thunk)

    # -- resources -----------------------------------------------------------------

    def _ensure_session(self) -> aiohttp.ClientSession:
        """The running loop's pooled session, created (with its shutdown guard) on first use."""
        if self._closed:
            raise RuntimeError(
                f"{type(self).__name__} was closed with aclose(); create a new backend to generate again"
            )
        loop = asyncio.get_running_loop()
        for stale in [other for other in self._pools if other.is_closed()]:
            # That loop was closed without shutting down its tasks (not through asyncio.run
            # or a Runner): nothing can close its connections any more; forget them.
            del self._pools[stale]
        pool = self._pools.get(loop)
        if pool is not None and not pool.session.closed:
            return pool.session
        if pool is not None:
            pool.guard.cancel()
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.max_connections or 0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout),
        )
        pool = _Pool(session)
        pool.guard = loop.create_task(
            _close_at_loop_shutdown(self._pools, loop, pool), name="rxllm-http-pool"
        )
        self._pools[loop] = pool
        self._latest = session
        return session

    @property
    def session(self) -> aiohttp.ClientSession | None:
        """The running loop's pooled session, once a generation created it (outside a loop: the newest)."""
        try:
            pool = self._pools.get(asyncio.get_running_loop())
        except RuntimeError:
            return self._latest
        return pool.session if pool is not None else None

    async def aclose(self) -> None:
        """Close the running loop's session and its connections, and refuse new generations. Idempotent.

        Generations still running on this loop fail with a :class:`BackendError` saying
        so (their thunks keep the text received); cancel them first to stop them
        quietly. A session pooled on another loop closes when that loop shuts down.
        """
        self._closed = True
        loop = asyncio.get_running_loop()
        live = [
            c for c in self._live if c.task is not None and not c.task.done() and c.task.get_loop() is loop
        ]
        for connection in live:
            connection.aborted = True
            assert connection.task is not None
            connection.task.cancel()
        if live:
            await asyncio.wait([c.task for c in live if c.task is not None])
        pool = self._pools.get(loop)
        if pool is not None:
            pool.guard.cancel()
            await asyncio.wait([pool.guard])

    async def __aenter__(self) -> HttpBackend:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- one generation --------------------------------------------------------------

    async def _produce(
        self,
        session: aiohttp.ClientSession,
        url: str,
        payload: bytes,
        generation: GenerationInfo,
        stream: bool,
        live: _Connection,
    ) -> AsyncIterator[str]:
        shown = redact_url(url)
        loop = asyncio.get_running_loop()
        idle = self.idle_timeout
        deadline = asyncio.timeout(self.timeout)
        idle_timer = asyncio.timeout(None)
        parser = self._parser(shown, generation, stream)
        failure: BackendError | None = None
        logger.debug("POST %s (model %s, stream=%s)", shown, self.model_id, stream)
        live.task = asyncio.current_task()
        self._live.add(live)
        try:
            async with deadline, idle_timer:
                response = await self._respond(session, url, payload, generation, stream, live, idle_timer)
                frames = 0
                async for data in response.content.iter_any():
                    for delta in parser.feed(data):
                        generation.deltas_sent += 1
                        yield delta
                    if parser.error is not None:
                        raise parser.error
                    if idle is not None and parser.frames != frames:
                        frames = parser.frames
                        idle_timer.reschedule(loop.time() + idle)
                for delta in parser.close():
                    generation.deltas_sent += 1
                    yield delta
                if parser.error is not None:
                    raise parser.error
                live.finished = True
        except (asyncio.CancelledError, GeneratorExit) as exc:
            if live.aborted and not live.disposed and isinstance(exc, asyncio.CancelledError):
                # Our own aclose() stopped this read: fail the generation, keeping its text.
                raise BackendError(
                    f"{type(self).__name__}.aclose() closed the connection to {shown} while this generation "
                    f"was running, after {parser.kept} deltas (kept on the thunk); close the "
                    f"backend only after its generations finish, or cancel them first.",
                    url=shown,
                    provider=self.provider,
                ) from None
            generation.cancelled_at = time.perf_counter()
            raise
        except BackendError:
            raise
        except TimeoutError as exc:
            if deadline.expired():
                failure = RequestTimeoutError(
                    f"{self.provider_name} at {shown} did not finish within timeout={self.timeout} s "
                    f"(after {parser.kept} deltas); the text received so far is kept on the thunk. "
                    f"Raise timeout= (None: no deadline) or lower the output length.",
                    timeout=self.timeout or 0.0,
                    url=shown,
                    provider=self.provider,
                )
            elif idle_timer.expired():
                waiting = (
                    "waiting for the response headers" if live.response is None else "between two frames"
                )
                failure = IdleTimeoutError(
                    f"{self.provider_name} at {shown} sent nothing for {idle} s ({waiting}, "
                    f"after {parser.kept} deltas); the text received so far is kept on the thunk. "
                    f"The model may still be loading or the server is overloaded: raise idle_timeout= "
                    f"(None waits forever).",
                    timeout=idle if idle is not None else 0.0,
                    url=shown,
                    provider=self.provider,
                )
            else:
                failure = self._translate(exc, shown, parser, live.response is not None)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            failure = self._translate(exc, shown, parser, live.response is not None)
        finally:
            self._live.discard(live)
            if live.response is not None:
                if live.finished:
                    live.response.release()
                else:
                    live.close_now()
            elif not live.finished and generation.cancelled_at is not None:
                # Cancelled while connecting or waiting for headers: aiohttp closed the socket.
                generation.connection_closed_at = time.perf_counter()
        if failure is not None:
            # Raised here, outside the handler, so that neither __cause__ nor __context__
            # holds the aiohttp exception (its repr shows the request's headers).
            raise failure

    async def _respond(
        self,
        session: aiohttp.ClientSession,
        url: str,
        payload: bytes,
        generation: GenerationInfo,
        stream: bool,
        live: _Connection,
        idle_timer: asyncio.Timeout,
    ) -> aiohttp.ClientResponse:
        """Send the request until a 2xx answers (retrying as configured); return that response."""
        loop = asyncio.get_running_loop()
        shown = redact_url(url)
        attempt = 0
        while True:
            if self.idle_timeout is not None:
                idle_timer.reschedule(loop.time() + self.idle_timeout)
            error: BackendError
            try:
                response = await session.post(
                    url, data=payload, headers=self._headers(stream), allow_redirects=False
                )
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                error = self._translate(exc, shown, None, False)
            else:
                generation.extra["http_status"] = response.status
                generation.extra["headers_at"] = time.perf_counter()
                if 200 <= response.status < 300:
                    live.response = response
                    await self._check_content_type(response, shown)
                    return response
                try:
                    error = await self._status_error(response, shown)
                finally:
                    response.close()
                    generation.connection_closed_at = time.perf_counter()
            if attempt >= self.retries or not _retryable(error):
                raise error
            wait = self._retry_wait(attempt, error)
            if wait is None:
                raise error
            attempt += 1
            generation.extra["retries"] = attempt
            generation.extra.setdefault("retry_log", []).append((time.perf_counter(), attempt, str(error)))
            logger.info("%s Retrying in %.2f s (retry %d of %d).", error, wait, attempt, self.retries)
            idle_timer.reschedule(None)
            await asyncio.sleep(wait)

    def _retry_wait(self, attempt: int, error: BackendError) -> float | None:
        """Seconds to wait before retry *attempt* + 1 (exponential, jittered, at least Retry-After)."""
        backoff = min(MAX_RETRY_WAIT, self.retry_backoff * 2.0**attempt)
        wait = backoff / 2 + random.uniform(0, backoff / 2)
        retry_after = error.retry_after if isinstance(error, BackendStatusError) else None
        if retry_after is not None:
            if retry_after > MAX_RETRY_WAIT:
                return None
            wait = max(wait, retry_after)
        return wait

    async def _check_content_type(self, response: aiohttp.ClientResponse, shown: str) -> None:
        """Refuse a 2xx answer that is not the API's (an HTML page from a proxy or a portal)."""
        content_type = response.headers.get("Content-Type", "")
        mime = content_type.partition(";")[0].strip().lower()
        if not mime or mime in _CONTENT_TYPES or mime.endswith("+json"):
            return
        try:
            head = await response.content.read(512)
        except (aiohttp.ClientError, OSError, ValueError):
            head = b""
        said = self.shown_text(head.decode("utf-8", errors="replace"))
        raise UnexpectedContentTypeError(
            f"{self.provider_name} at {shown} answered {response.status} with Content-Type "
            f"{server_text(content_type, 80)!r}{f' ({said})' if said else ''}: this URL is not "
            f"{self.endpoint_kind} endpoint (a proxy, a login page or another web server answered). "
            f"{self.hint_wire_format()}",
            content_type=server_text(content_type, 80),
            url=shown,
            provider=self.provider,
        )

    @property
    def endpoint_kind(self) -> str:
        """What the URL should be, as said in errors ("an Ollama", "an OpenAI-compatible")."""
        return f"a {self.provider_name}"

    def _translate(
        self, exc: BaseException, shown: str, parser: StreamParser | None, answered: bool
    ) -> BackendError:
        """The :class:`BackendError` for an aiohttp or socket error (the one place that maps them).

        *answered*: the response headers had arrived. The original exception is described,
        sanitised, in ``cause``; it is never chained.
        """
        cause = f"{type(exc).__name__}: {self.shown_text(str(exc))}"
        kept = parser.kept if parser is not None else 0
        error: BackendError
        if isinstance(exc, aiohttp.ClientConnectorError):
            os_error = exc.os_error
            reason = self.shown_text(os_error.strerror or str(os_error) or type(os_error).__name__)
            error = BackendUnreachableError(
                f"Cannot reach {self.provider_name} at {shown} ({reason}). {self.hint_unreachable()}",
                url=shown,
                provider=self.provider,
            )
        elif isinstance(exc, TimeoutError) and not answered:
            error = ConnectTimeoutError(
                f"Connecting to {self.provider_name} at {shown} took longer than {self.connect_timeout} s. "
                f"{self.hint_unreachable()} Raise connect_timeout= if the server is slow to accept.",
                timeout=self.connect_timeout or 0.0,
                url=shown,
                provider=self.provider,
            )
        elif isinstance(exc, aiohttp.ClientResponseError):
            # aiohttp could not parse the response: a bad status line, a header over its
            # size limit, a bad chunk size, ... Its message says which.
            error = ProtocolError(
                f"{self.provider_name} at {shown} did not answer with valid HTTP "
                f"({self.shown_text(exc.message)}). {self.hint_wire_format()}",
                url=shown,
                provider=self.provider,
            )
        elif isinstance(exc, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError)):
            if answered and parser is not None:
                error = parser.incomplete("closed the connection mid-stream (or sent a broken body)")
            else:
                error = BackendUnreachableError(
                    f"{self.provider_name} at {shown} closed the connection before answering "
                    f"({self.shown_text(str(exc) or type(exc).__name__)}). {self.hint_unreachable()}",
                    url=shown,
                    provider=self.provider,
                )
        else:
            error = BackendError(
                f"The request to {self.provider_name} at {shown} failed after {kept} deltas "
                f"({cause}). {self.hint_wire_format()}",
                url=shown,
                provider=self.provider,
            )
        error.cause = cause
        return error

    async def _status_error(self, response: aiohttp.ClientResponse, url: str) -> BackendStatusError:
        """The error for a non-2xx response, with the server's own message (neutralised)."""
        status = response.status
        try:
            raw = await response.content.read(ERROR_BODY_LIMIT)
        except (aiohttp.ClientError, OSError, ValueError):
            raw = b""
        server_message = self.shown_text(server_error_text(raw) or (response.reason or ""))
        said = f": {server_message}" if server_message else ""
        where = f"{self.provider_name} at {url} answered {status}{said}."
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        common: dict[str, Any] = {
            "status": status,
            "server_message": server_message,
            "url": url,
            "provider": self.provider,
        }
        if 300 <= status < 400:
            location = self.shown_text(redact_url(response.headers.get("Location", "")))
            return RedirectError(
                f"{self.provider_name} at {url} answered {status}, redirecting to "
                f"{location or '(no Location header)'}. Generation requests do not follow redirects "
                f"(that would re-send the prompt and credentials elsewhere): set base_url to the "
                f"server's final address. {self.hint_wire_format()}",
                location=location,
                **common,
            )
        if status in (401, 403):
            return AuthenticationError(f"{where} {self.hint_auth()}", **common)
        if self.is_model_not_found(status, server_message):
            return ModelNotFoundError(f"{where} {self.hint_model_not_found()}", **common)
        if status == 429:
            wait = f"retry after {retry_after:g} s" if retry_after is not None else "retry later"
            return RateLimitError(
                f"{where} Rate limited: {wait}, or lower the number of concurrent generations "
                f"(retries= on the backend retries automatically).",
                retry_after=retry_after,
                **common,
            )
        if status >= 500:
            wait = f" (it asked to retry after {retry_after:g} s)" if retry_after is not None else ""
            return ServerError(
                f"{where} The server failed{wait}; check its log, then retry.",
                retry_after=retry_after,
                **common,
            )
        if status == 404:
            return BadRequestError(
                f"{where} No such endpoint: check base_url ({self.base_url}). {self.hint_wire_format()}",
                **common,
            )
        return BadRequestError(f"{where} The server rejected the request; check the model options.", **common)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_id!r}, base_url={self.base_url!r})"


def _retryable(error: BackendError) -> bool:
    """Whether *error* means the server did not start the generation, so sending again is safe."""
    if isinstance(error, (BackendUnreachableError, ConnectTimeoutError)):
        return True
    return isinstance(error, BackendStatusError) and error.status in RETRY_STATUSES


def _url_secrets(url: str) -> list[str]:
    """The credentials written into *url* (``user:password@``), longest first, to redact from text."""
    _, sep, rest = url.partition("://")
    authority = rest.split("/", 1)[0] if sep else ""
    userinfo, at, _ = authority.rpartition("@")
    if not at or not userinfo:
        return []
    password = userinfo.partition(":")[2]
    found = {userinfo, unquote(userinfo), password, unquote(password)}
    return sorted((s for s in found if len(s) >= 4), key=len, reverse=True)


class _Pool:
    """One event loop's session and the task that closes it when that loop shuts down."""

    __slots__ = ("guard", "session")

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.guard: asyncio.Task[None]


async def _close_at_loop_shutdown(
    pools: dict[asyncio.AbstractEventLoop, _Pool], loop: asyncio.AbstractEventLoop, pool: _Pool
) -> None:
    """Wait until cancelled (``aclose()``, or ``asyncio.run``/``Runner`` shutting the loop
    down), then close the pool's session there, on its own loop, before the loop closes."""
    try:
        await loop.create_future()
    finally:
        if pools.get(loop) is pool:
            del pools[loop]
        await pool.session.close()
        # Let the transports' connection_lost callbacks run before the loop may close.
        await asyncio.sleep(0)


class _Connection:
    """The response of one generation, so that disposal can close it synchronously."""

    __slots__ = ("aborted", "disposed", "finished", "generation", "response", "task")

    def __init__(self, generation: GenerationInfo) -> None:
        self.generation = generation
        self.response: aiohttp.ClientResponse | None = None
        self.task: asyncio.Task[Any] | None = None
        self.finished = False
        self.disposed = False
        """The subscriber went away (a cancel): the reading task is being cancelled."""
        self.aborted = False
        """The backend's aclose() cancelled the reading task."""

    def close_now(self) -> None:
        """Close the connection (once) unless the stream ended normally; record when."""
        response = self.response
        # response.closed, not generation.connection_closed_at: a refused attempt before a
        # retry set that field, and this response must close all the same.
        if response is None or self.finished or response.closed:
            return
        response.close()
        self.generation.connection_closed_at = time.perf_counter()


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


def chat_messages(action: Any, ctx: Context, system_prompt: Any = None) -> list[dict[str, str]]:
    """The chat ``messages`` for *action* after *ctx*'s generation view.

    ``Message`` keeps its role; a ``ModelOutputThunk`` is an assistant turn (its text
    so far); any other component (``format_for_llm()``) or string is a user turn. A
    :class:`~engine.core.continuation.Continuation` is its action's turn followed by a
    trailing assistant message holding the partial answer (see :func:`continuation_messages`).
    """
    messages: list[dict[str, str]] = []
    if system_prompt:
        messages.append({"role": "system", "content": str(system_prompt)})
    for turn in [*ctx.view_for_generation(), action]:
        if isinstance(turn, Continuation):
            messages.extend(continuation_messages(turn))
        else:
            messages.append(_message(turn))
    return messages


def continuation_messages(turn: Continuation) -> list[dict[str, str]]:
    """The action's turn, with the repair instruction appended to it, then the partial answer.

    The instruction goes into the user turn (a new user turn after a non-user action),
    never after the assistant message, so the answer stays the last message and the
    server continues it; a system message mid-conversation would break chat templates
    that accept one only first.
    """
    messages = [_message(turn.action)]
    if turn.repair:
        last = messages[-1]
        if last["role"] == "user":
            messages[-1] = {"role": "user", "content": f"{last['content']}\n\n{turn.repair}"}
        else:
            messages.append({"role": "user", "content": turn.repair})
    messages.append({"role": "assistant", "content": turn.prefix})
    return messages


def _message(turn: Any) -> dict[str, str]:
    if isinstance(turn, Message):
        return {"role": turn.role, "content": turn.content}
    if isinstance(turn, ModelOutputThunk):
        return {"role": "assistant", "content": turn.text}
    if isinstance(turn, str):
        return {"role": "user", "content": turn}
    render = getattr(turn, "format_for_llm", None)
    if callable(render):
        return {"role": "user", "content": str(render())}
    raise TypeError(
        f"cannot send a {type(turn).__name__} to a chat model: pass a str, a Message, or a component "
        f"with format_for_llm()"
    )


def json_schema_for(format: Any) -> dict[str, Any]:
    """The JSON schema to send for a structured-output *format* (any type ``format=`` accepts, or a
    JSON-schema dict); :mod:`engine.core.typed_output` decides, and imports pydantic on first use."""
    from engine.core import typed_output

    return typed_output.json_schema(format)
