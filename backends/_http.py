"""Plumbing shared by the HTTP backends: session lifetime, the generation task, error mapping.

:class:`HttpBackend` owns one ``aiohttp.ClientSession`` (created lazily on the
running loop, shared by every concurrent generation, closed by ``aclose()``) and
runs each generation as an async generator read by
:func:`engine.core.asyncrx.from_async_iterable`. A subclass supplies only the wire format:
the request it sends (:meth:`HttpBackend._request`), a :class:`StreamParser` for the
body, and the provider-specific hints that go into error messages.

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
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Mapping
from types import TracebackType
from typing import Any, ClassVar

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
    RateLimitError,
    ServerError,
    truncate,
)
from engine.core.asyncrx import from_async_iterable
from engine.core.components import Message
from engine.core.context import Context
from engine.core.continuation import Continuation
from engine.core.options import ModelOption
from engine.core.thunk import GenerationInfo, ModelOutputThunk

__all__ = ["HttpBackend", "StreamParser", "chat_messages", "json_schema_for", "server_error_text"]

logger = logging.getLogger("backends")

ERROR_BODY_LIMIT = 64 * 1024
"""Bytes of an error response read to find the server's message."""


class StreamParser(ABC):
    """Turns one response body into text deltas and fills in the generation record.

    ``feed`` gets the body in network-sized pieces; ``close`` is called at the end of
    the body. A streaming body goes to ``_feed`` piece by piece and ends with
    ``_close``; a non-streaming one is buffered here and handed whole to
    ``_close_whole``. All three are generators of deltas that raise a
    :class:`BackendError` where the stream goes wrong (the closing ones raise
    :class:`IncompleteStreamError` if the terminal frame never came). The deltas
    parsed before the error are still returned, and the error is kept in ``error``
    for the caller to raise after handing them on: text that arrived is never lost.
    ``frames`` counts protocol frames parsed (keep-alive comments excluded); the idle
    timer restarts whenever it grows.
    """

    def __init__(self, backend: HttpBackend, url: str, generation: GenerationInfo, stream: bool) -> None:
        self.backend = backend
        self.url = url
        self.generation = generation
        self.stream = stream
        self.frames = 0
        self.done = False
        self.error: BackendError | None = None
        self._body = bytearray()  # a non-streaming body, until close()

    def feed(self, data: bytes) -> list[str]:
        """Parse *data*; return the non-empty deltas it completed (then check ``error``)."""
        if not self.stream:
            self._body += data
            return []
        return self._collect(self._feed(data))

    def close(self) -> list[str]:
        """End of body: return any last deltas (then check ``error``)."""
        return self._collect(self._close() if self.stream else self._close_whole(bytes(self._body)))

    def _collect(self, deltas: Iterator[str]) -> list[str]:
        out: list[str] = []
        if self.error is not None:
            return out
        try:
            for delta in deltas:
                if delta:
                    out.append(delta)
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
    def _close_whole(self, body: bytes) -> Iterator[str]:
        """Yield the deltas of a whole non-streaming *body*; raise if it is incomplete."""

    def malformed(self, what: str, line: bytes | str) -> MalformedStreamError:
        """A :class:`MalformedStreamError` quoting *line* (truncated)."""
        text = line.decode("utf-8", errors="replace") if isinstance(line, bytes) else line
        quoted = truncate(self.backend.redact(text))
        return MalformedStreamError(
            f"{self.backend.provider_name} at {self.url} sent {what}: {quoted!r}. "
            f"{self.backend.hint_wire_format()}",
            line=quoted,
            url=self.url,
            provider=self.backend.provider,
        )

    def incomplete(self, detail: str) -> IncompleteStreamError:
        """An :class:`IncompleteStreamError` saying how much arrived before the end."""
        generation = self.generation
        return IncompleteStreamError(
            f"{self.backend.provider_name} at {self.url} {detail} after {generation.deltas_sent} deltas, "
            f"before the stream's terminal frame; the text received so far is kept on the thunk. "
            f"Check the server's log; a prompt longer than its context window often ends a stream this way.",
            url=self.url,
            provider=self.backend.provider,
        )

    def stream_error(self, server_message: str) -> ServerError:
        """A :class:`ServerError` for an error frame sent inside a 200 stream."""
        text = truncate(self.backend.redact(server_message))
        return ServerError(
            f"{self.backend.provider_name} at {self.url} reported an error after "
            f"{self.generation.deltas_sent} deltas: {text}. The text received so far is kept on the thunk.",
            status=200,
            server_message=text,
            url=self.url,
            provider=self.backend.provider,
        )


class HttpBackend(ABC):
    """Base of the HTTP backends: one pooled session, one task per generation.

    ``connect_timeout``: seconds to open a TCP connection. ``idle_timeout``: the
    longest wait for the response headers and then between two frames of the stream
    (for a non-streaming request, for the whole response); ``None`` waits forever.
    ``max_connections``: connections open at once (``None``: no limit; a streaming
    generation holds one for its whole duration).
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
        max_connections: int | None = None,
    ) -> None:
        if not model_id:
            raise ValueError(
                f"{type(self).__name__} needs a model name, e.g. {type(self).__name__}('llama3.2')"
            )
        for name, value in (("connect_timeout", connect_timeout), ("idle_timeout", idle_timeout)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds or None, got {value!r}")
        if max_connections is not None and max_connections < 1:
            raise ValueError(f"max_connections must be >= 1 or None, got {max_connections!r}")
        self.model_id = model_id
        self.base_url = base_url.rstrip("/")
        self.model_options: dict[str, Any] = dict(model_options or {})
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.generations: list[GenerationInfo] = []
        """One record per generation started, oldest first (the last 1000 are kept)."""
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._live: set[_Connection] = set()

    # -- subclass hooks ----------------------------------------------------------

    @abstractmethod
    def _request(
        self, action: Any, ctx: Context, options: dict[str, Any], format: type | None, stream: bool
    ) -> tuple[str, dict[str, Any]]:
        """The URL and JSON body of the request for one generation."""

    @abstractmethod
    def _parser(self, url: str, generation: GenerationInfo, stream: bool) -> StreamParser:
        """A fresh parser for one response body."""

    def _headers(self, stream: bool) -> dict[str, str]:
        """Request headers (a subclass adds its credentials)."""
        return {"Content-Type": "application/json", "User-Agent": "rxllm"}

    def redact(self, text: str) -> str:
        """*text* with any secret the backend holds replaced by ``***``."""
        return text

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
        generation.extra["url"] = url
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
        if self._closed:
            raise RuntimeError(
                f"{type(self).__name__} was closed with aclose(); create a new backend to generate again"
            )
        loop = asyncio.get_running_loop()
        session = self._session
        if session is not None and not session.closed:
            if self._session_loop is not loop:
                raise RuntimeError(
                    f"{type(self).__name__} is bound to the event loop it was first used on; create one "
                    f"backend per event loop, or `await backend.aclose()` on the old loop first"
                )
            return session
        connector = aiohttp.TCPConnector(limit=self.max_connections or 0)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout),
        )
        self._session_loop = loop
        return self._session

    @property
    def session(self) -> aiohttp.ClientSession | None:
        """The pooled session, once the first generation created it."""
        return self._session

    async def aclose(self) -> None:
        """Close the session and its connections. Idempotent.

        Generations still running fail with a :class:`BackendError` saying so (their
        thunks keep the text received); cancel them first to stop them quietly.
        """
        self._closed = True
        live = [c for c in self._live if c.task is not None and not c.task.done()]
        for connection in live:
            connection.aborted = True
            assert connection.task is not None
            connection.task.cancel()
        if live:
            await asyncio.wait([c.task for c in live if c.task is not None])
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()
            # Let the transports' connection_lost callbacks run before the loop may close.
            await asyncio.sleep(0)

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
        loop = asyncio.get_running_loop()
        idle = self.idle_timeout
        idle_timer = asyncio.timeout(None)
        response: aiohttp.ClientResponse | None = None
        finished = False
        logger.debug("POST %s (model %s, stream=%s)", url, self.model_id, stream)
        live.task = asyncio.current_task()
        self._live.add(live)
        try:
            async with idle_timer:
                if idle is not None:
                    idle_timer.reschedule(loop.time() + idle)
                response = await session.post(url, data=payload, headers=self._headers(stream))
                live.response = response
                generation.extra["http_status"] = response.status
                generation.extra["headers_at"] = time.perf_counter()
                if not 200 <= response.status < 300:
                    raise await self._status_error(response, url)
                parser = self._parser(url, generation, stream)
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
                finished = live.finished = True
        except (asyncio.CancelledError, GeneratorExit) as exc:
            if live.aborted and not live.disposed and isinstance(exc, asyncio.CancelledError):
                # Our own aclose() stopped this read: fail the generation, keeping its text.
                raise BackendError(
                    f"{type(self).__name__}.aclose() closed the connection to {url} while this generation "
                    f"was running, after {generation.deltas_sent} deltas (kept on the thunk); close the "
                    f"backend only after its generations finish, or cancel them first.",
                    url=url,
                    provider=self.provider,
                ) from None
            generation.cancelled_at = time.perf_counter()
            raise
        except BackendError:
            raise
        except TimeoutError as exc:
            if idle_timer.expired():
                raise IdleTimeoutError(
                    f"{self.provider_name} at {url} sent nothing for {idle} s "
                    f"({'waiting for the response headers' if response is None else 'between two frames'}, "
                    f"after {generation.deltas_sent} deltas); the text received so far is kept on the thunk. "
                    f"The model may still be loading or the server is overloaded: raise idle_timeout= "
                    f"(None waits forever).",
                    timeout=idle if idle is not None else 0.0,
                    url=url,
                    provider=self.provider,
                ) from None
            if isinstance(exc, aiohttp.ConnectionTimeoutError) or response is None:
                raise ConnectTimeoutError(
                    f"Connecting to {self.provider_name} at {url} took longer than {self.connect_timeout} s. "
                    f"{self.hint_unreachable()} Raise connect_timeout= if the server is slow to accept.",
                    timeout=self.connect_timeout or 0.0,
                    url=url,
                    provider=self.provider,
                ) from exc
            raise
        except aiohttp.ClientConnectorError as exc:
            raise BackendUnreachableError(
                f"Cannot reach {self.provider_name} at {url} ({exc.os_error.strerror or exc.os_error}). "
                f"{self.hint_unreachable()}",
                url=url,
                provider=self.provider,
            ) from exc
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            if response is None:
                raise BackendUnreachableError(
                    f"{self.provider_name} at {url} closed the connection before answering ({exc}). "
                    f"{self.hint_unreachable()}",
                    url=url,
                    provider=self.provider,
                ) from exc
            raise self._parser(url, generation, stream).incomplete(
                "closed the connection mid-stream"
            ) from exc
        finally:
            self._live.discard(live)
            if response is not None:
                if finished:
                    response.release()
                else:
                    live.close_now()
            elif not finished and generation.cancelled_at is not None:
                # Cancelled while connecting or waiting for headers: aiohttp closed the socket.
                generation.connection_closed_at = time.perf_counter()

    async def _status_error(self, response: aiohttp.ClientResponse, url: str) -> BackendStatusError:
        """The error for a non-2xx response, with the server's own message."""
        status = response.status
        try:
            raw = await response.content.read(ERROR_BODY_LIMIT)
        except (aiohttp.ClientError, OSError):
            raw = b""
        server_message = truncate(self.redact(server_error_text(raw) or (response.reason or "")))
        said = f": {server_message}" if server_message else ""
        where = f"{self.provider_name} at {url} answered {status}{said}."
        common: dict[str, Any] = {
            "status": status,
            "server_message": server_message,
            "url": url,
            "provider": self.provider,
        }
        if status in (401, 403):
            return AuthenticationError(f"{where} {self.hint_auth()}", **common)
        if self.is_model_not_found(status, server_message):
            return ModelNotFoundError(f"{where} {self.hint_model_not_found()}", **common)
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            wait = f"retry after {retry_after:g} s" if retry_after is not None else "retry later"
            return RateLimitError(
                f"{where} Rate limited: {wait}, or lower the number of concurrent generations.",
                retry_after=retry_after,
                **common,
            )
        if status >= 500:
            return ServerError(f"{where} The server failed; check its log, then retry.", **common)
        if status == 404:
            return BadRequestError(
                f"{where} No such endpoint: check base_url ({self.base_url}). {self.hint_wire_format()}",
                **common,
            )
        return BadRequestError(f"{where} The server rejected the request; check the model options.", **common)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_id!r}, base_url={self.base_url!r})"


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
        if response is None or self.finished or self.generation.connection_closed_at is not None:
            return
        response.close()
        self.generation.connection_closed_at = time.perf_counter()


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or ``None``."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
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
