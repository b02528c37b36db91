"""The HTTP backends' base: pooled sessions, the generation task, retries, the fallback request.

:class:`HttpBackend` keeps one ``aiohttp.ClientSession`` per event loop (created lazily on
the running loop, shared by its generations, closed when that loop shuts down or by
``aclose()``), so one backend serves a sync twin's loop, then ``asyncio.run(...)``, then
another. Each generation is an async generator read by
:func:`engine.core.asyncrx.from_async_iterable`. A subclass supplies the wire format (the
hooks at the top of the class): the request (:meth:`HttpBackend._request`), a
:class:`~backends._parser.StreamParser` for the body, the hints for error messages. Beside
it: :mod:`backends._failures` turns every failure into a :class:`~backends.errors.BackendError`
(status to exception, Retry-After, the server's text, redaction of the credentials);
:mod:`backends._parser` is the base of the body parsers; :mod:`backends._chat` builds the
chat messages and the schema of a request.

Cancellation: disposing the thunk's subscription (``thunk.cancel()``, or the pipeline's
cancel-on-fail) first closes the HTTP response synchronously, in the disposing call,
which closes its TCP connection (a half-read connection never goes back to the pool),
then cancels the reading task (or, from inside a delta callback, lets it close the
generator). ``generation.connection_closed_at`` records the close and
``generation.cancelled_at`` when the reading task saw the cancellation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, ClassVar, TypedDict

import aiohttp
from reactivex import Observable, abc
from reactivex.disposable import Disposable

from backends._chat import chat_messages
from backends._failures import (
    Secrets,
    check_content_type,
    retry_wait,
    retryable,
    status_error,
    translate,
)
from backends._idle import IdleDeadline
from backends._parser import StreamParser
from backends.errors import (
    QUOTE_LIMIT,
    BackendError,
    IdleTimeoutError,
    RequestTimeoutError,
    redact_url,
    server_text,
)
from backends.sse import DEFAULT_MAX_LINE_BYTES
from engine.core.asyncrx import LoopObservable, from_async_iterable, observe
from engine.core.context import Context
from engine.core.generation import GenerationInfo
from engine.core.options import ModelOption
from engine.core.thunk import ModelOutputThunk

__all__ = ["HttpBackend", "HttpOptions"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_FRAME_BYTES = DEFAULT_MAX_LINE_BYTES
"""Default cap on one NDJSON line or one server-sent event (8 MiB)."""

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
"""Default cap on a non-streaming response body (8 MiB): no chat answer needs more; a larger
one is a broken or hostile server (``max_body_bytes=`` raises it)."""


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
      ``max_body_bytes`` (8 MiB): the largest non-streaming body. Past either the
      generation fails with :class:`MalformedStreamError`.

    Credentials in ``base_url`` (``http://user:password@host``) are sent as HTTP basic
    auth and shown nowhere: ``base_url``, ``repr()``, errors and logs show ``***``.
    Redirects are not followed (a 3xx is a :class:`RedirectError`).
    """

    provider: ClassVar[str]
    provider_name: ClassVar[str]

    # -- what a subclass implements: the wire format and its hints -------------

    @abstractmethod
    def _request(
        self, action: Any, ctx: Context, options: dict[str, Any], format: type | None, stream: bool
    ) -> tuple[str, dict[str, Any]]:
        """The URL (under ``self._root``, the unredacted base URL) and JSON body of one request."""

    @abstractmethod
    def _parser(self, url: str, generation: GenerationInfo, stream: bool) -> StreamParser:
        """A fresh parser for one response body (*url* is the redacted URL, for messages)."""

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

    @property
    def endpoint_kind(self) -> str:
        """What the URL should be, as said in errors ("an Ollama", "an OpenAI-compatible")."""
        return f"a {self.provider_name}"

    def _fallback(self, body: dict[str, Any], error: BackendError) -> dict[str, Any] | None:
        """The body to send instead of *body* after *error*, an error answer before any delta, or
        ``None`` to fail with it (the default). Asked once per generation."""
        return None

    def _headers(self, stream: bool) -> dict[str, str]:
        """Request headers (a subclass adds its credentials)."""
        return {"Content-Type": "application/json", "User-Agent": "rxllm"}

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
        self._secrets = Secrets.of(url=self._root)
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

    # -- server text, as shown ----------------------------------------------------

    def redact(self, text: str) -> str:
        """*text* with every secret the backend holds (URL credentials, API key) replaced by ``***``."""
        return self._secrets.redact(redact_url(text))

    def shown_text(self, text: str, limit: int = QUOTE_LIMIT) -> str:
        """Server-provided *text* as shown in errors: secrets redacted, neutralised, truncated.

        Redacted before neutralising (so that a cut never leaves half a secret) and after
        (so that a secret split by an escape sequence the neutralising drops is caught too).
        """
        return self.redact(server_text(self.redact(text), limit))

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
        shown = redact_url(url)  # one string per generation: its record and its messages share it
        generation.extra["url"] = shown
        generation.extra["streaming"] = stream
        self.generations.append(generation)
        if len(self.generations) > 1000:
            del self.generations[:-1000]

        def subscribe(observer: Any) -> abc.DisposableBase:
            live = _Connection(generation)
            reader = from_async_iterable(
                lambda: self._produce(session, url, shown, body, generation, stream, live)
            )
            subscription = observe(reader, observer)

            def dispose() -> None:
                live.disposed = True
                live.close_now()  # closes the socket in this call, before the reading task even runs
                subscription.dispose()

            return Disposable(dispose)

        # A LoopObservable: the thunk reads it without reactivex's two observer wrappers per delta.
        source: Observable[str] = LoopObservable(subscribe)
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
        shown: str,
        body: dict[str, Any],
        generation: GenerationInfo,
        stream: bool,
        live: _Connection,
    ) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        idle = self.idle_timeout
        deadline = asyncio.timeout(self.timeout)
        idle_timer = IdleDeadline(idle)
        parser = self._parser(shown, generation, stream)
        failure: BackendError | None = None
        logger.debug("POST %s (model %s, stream=%s)", shown, self.model_id, stream)
        live.task = asyncio.current_task()
        self._live.add(live)
        try:
            async with deadline, idle_timer:
                fallback = True  # one fallback request, for a server that refused a part of the first
                while True:
                    try:
                        response = await self._respond(
                            session, url, shown, body, generation, stream, live, idle_timer
                        )
                        frames = 0
                        content = response.content
                        # readany() itself, not iter_any(): its iterator adds a coroutine per read.
                        while data := await content.readany():
                            for delta in parser.feed(data):
                                generation.deltas_sent += 1
                                yield delta
                            if parser.error is not None:
                                raise parser.error
                            if parser.frames != frames:  # news: the silence counts from here
                                frames = parser.frames
                                idle_timer.last = loop.time()
                        for delta in parser.close():
                            generation.deltas_sent += 1
                            yield delta
                        if parser.error is not None:
                            raise parser.error
                    except BackendError as error:
                        instead = self._fallback(body, error) if fallback and parser.kept == 0 else None
                        if instead is None:
                            raise
                        fallback = False
                        body = instead
                        if live.response is not None:
                            live.response.close()  # the refusal came as an error frame
                            live.response = None
                        parser = self._parser(shown, generation, stream)
                        continue
                    live.finished = True
                    break
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
                failure = translate(self, exc, shown, parser.kept, live.response is not None)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            failure = translate(self, exc, shown, parser.kept, live.response is not None)
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
        shown: str,
        body: Mapping[str, Any],
        generation: GenerationInfo,
        stream: bool,
        live: _Connection,
        idle_timer: IdleDeadline,
    ) -> aiohttp.ClientResponse:
        """Send the request until a 2xx answers (retrying as configured); return that response.

        The encoded body lives in this call only: a stream does not keep it while it is read."""
        payload = json.dumps(body, ensure_ascii=False).encode()
        attempt = 0
        while True:
            idle_timer.arm()
            error: BackendError
            try:
                response = await session.post(
                    url, data=payload, headers=self._headers(stream), allow_redirects=False
                )
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                error = translate(self, exc, shown, None, False)
            else:
                generation.extra["http_status"] = response.status
                generation.extra["headers_at"] = time.perf_counter()
                if 200 <= response.status < 300:
                    live.response = response
                    await check_content_type(self, response, shown)
                    return response
                try:
                    error = await status_error(self, response, shown, body)
                finally:
                    response.close()
                    generation.connection_closed_at = time.perf_counter()
            if attempt >= self.retries or not retryable(error):
                raise error
            wait = retry_wait(self.retry_backoff, attempt, error)
            if wait is None:
                raise error
            attempt += 1
            generation.extra["retries"] = attempt
            generation.extra.setdefault("retry_log", []).append((time.perf_counter(), attempt, str(error)))
            logger.info("%s Retrying in %.2f s (retry %d of %d).", error, wait, attempt, self.retries)
            idle_timer.disarm()
            await asyncio.sleep(wait)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_id!r}, base_url={self.base_url!r})"


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
