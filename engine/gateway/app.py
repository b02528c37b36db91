"""The gateway's aiohttp application: OpenAI's chat-completions API over ``stream_with_chunking``.

One run of :func:`~engine.assembly.stream_with_chunking` per request; each validated chunk
is written to the client as soon as the run delivers it. The response starts (status and
headers) with the first delivered chunk, so an upstream error before any text is an error
status with OpenAI's error body; after it, an error frame then ``data: [DONE]``.

A client that disconnects cancels its handler (``handler_cancellation``, set on the
application so every runner, gunicorn's worker included, honours it); leaving the run's
event loop early cancels the upstream generation and closes its connection at once. The
request deadline (``request_timeout``) does the same.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import attrs
from aiohttp import web

from backends.errors import BackendError
from backends.model_list import ListedModel
from engine.assembly import stream_with_chunking
from engine.core.backend import Backend
from engine.core.components import Message
from engine.core.context import ChatContext
from engine.core.events import (
    ChunkEvent,
    CompletedEvent,
    FullValidationEvent,
    QuickCheckEvent,
    RetryEvent,
)
from engine.core.requirements import Requirement
from engine.gateway.config import GatewayConfig, config_from_environment
from engine.gateway.upstream import failure_of
from engine.gateway.wire import (
    ChatRequest,
    RequestError,
    chunk_frame,
    completion_body,
    completion_id,
    done_frame,
    error_frame,
    now,
    parse_chat_request,
)
from engine.result import StreamChunkingResult
from engine.telemetry_export import configure_from_environment, metrics_handler
from engine.text_layout import TextTracker

__all__ = ["GATEWAY", "Gateway", "create_app"]

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1
"""``Retry-After`` sent with a 503 when the worker's streams are all taken."""
FAILED_CHECK_HEADER = "X-Rxllm-Failed-Check"
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


@attrs.define
class _Outcome:
    """What a run ended with, for the last chunk or the non-streaming body."""

    text: list[str] = attrs.field(factory=list)
    failed_check: dict[str, str] | None = None
    attempts: int = 1
    error: BaseException | None = None
    timed_out: bool = False

    def extension(self) -> dict[str, Any]:
        """The ``rxllm`` object of the last chunk (and of the non-streaming body)."""
        ext: dict[str, Any] = {"attempts": self.attempts}
        if self.failed_check is not None:
            ext["failed_check"] = self.failed_check
        return ext


def _label(req: Requirement) -> str:
    return str(getattr(req, "label", None) or getattr(req, "description", None) or type(req).__name__)


def _header_safe(text: str) -> str:
    """*text* as one line of printable ASCII (a header value)."""
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in text)[:500]


class _ClientGone(Exception):
    """The client stopped reading (for ``idle_timeout``) or closed the connection mid-stream."""


class _SseAnswer:
    """The server-sent events of one streaming answer; the response starts with its first frame."""

    def __init__(self, request: web.Request, model: str, idle_timeout: float) -> None:
        self.request = request
        self.model = model
        self.idle_timeout = idle_timeout
        self.ident = completion_id()
        self.created = now()
        self.response: web.StreamResponse | None = None

    async def _open(self) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        try:
            await response.prepare(self.request)
        except ConnectionError as exc:
            raise _ClientGone(type(exc).__name__) from None
        self.response = response
        await self.frame(delta={"role": "assistant", "content": ""})
        return response

    async def write(self, data: bytes) -> None:
        """Write *data*, starting the response first if needed."""
        response = self.response if self.response is not None else await self._open()
        try:
            # A client that stops reading fills the socket's buffer: give up on it after idle_timeout.
            async with asyncio.timeout(self.idle_timeout):
                await response.write(data)
        except (TimeoutError, ConnectionError) as exc:
            raise _ClientGone(type(exc).__name__) from None

    async def frame(self, **fields: Any) -> None:
        """One ``chat.completion.chunk`` with *fields* (see :func:`~engine.gateway.wire.chunk_frame`)."""
        await self.write(chunk_frame(self.ident, self.model, self.created, **fields))

    async def content(self, text: str) -> None:
        """A validated piece of the answer."""
        await self.frame(delta={"content": text})

    async def end(self) -> web.StreamResponse:
        """Finish the body."""
        response = self.response if self.response is not None else await self._open()
        try:
            await response.write_eof()
        except ConnectionError as exc:
            raise _ClientGone(type(exc).__name__) from None
        return response


class Gateway:
    """The request handlers of one application (one per worker process), and its upstream backend."""

    def __init__(self, config: GatewayConfig, backend: Backend | None = None) -> None:
        self.config = config
        self.backend = backend if backend is not None else config.create_backend()
        self.requirements = config.requirement_factory()
        self.active = 0
        """Chat requests in progress in this worker."""
        self._secrets = [
            s for s in (config.api_key, config.client_key, getattr(self.backend, "_api_key", None)) if s
        ]

    # -- plumbing --------------------------------------------------------------------------------

    def scrub(self, text: str) -> str:
        """*text* with the upstream's and the gateway's keys replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _json_error(self, error: RequestError, headers: Mapping[str, str] | None = None) -> web.Response:
        body = error.body()
        body["error"]["message"] = self.scrub(body["error"]["message"])
        return web.json_response(body, status=error.status, headers=headers)

    async def lifetime(self, app: web.Application) -> AsyncIterator[None]:
        """``cleanup_ctx``: say which event loop serves (uvloop where installed), and close the
        upstream's connections when the application stops."""
        loop = asyncio.get_running_loop()
        logger.info("worker %d serving on %s.%s", os.getpid(), type(loop).__module__, type(loop).__name__)
        yield
        aclose = getattr(self.backend, "aclose", None)
        if aclose is not None:
            await aclose()

    @web.middleware
    async def guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Bearer authentication on ``/v1/`` and ``/metrics`` (constant-time), and OpenAI-shaped errors
        for aiohttp's own."""
        key = self.config.client_key
        if key is not None and (request.path.startswith("/v1/") or request.path == "/metrics"):
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if not (scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), key.encode())):
                return self._json_error(
                    RequestError(
                        401,
                        "missing or wrong API key: send the gateway's client key as "
                        "'Authorization: Bearer KEY'",
                        type="invalid_request_error",
                        code="invalid_api_key",
                    ),
                    headers={"WWW-Authenticate": "Bearer"},
                )
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status)
            return self._json_error(
                RequestError(exc.status, exc.reason, type="invalid_request_error", code=code)
            )

    # -- GET -----------------------------------------------------------------------------------

    async def models(self, request: web.Request) -> web.Response:
        """``GET /v1/models``: the one model a request may name (the configured one), with the
        upstream's ``created`` and ``owned_by`` where its backend can list the server's models.

        The upstream's other models are left out: a request naming one is refused (404
        ``model_not_found``), and clients offer what this list names.
        """
        model: dict[str, Any] = {
            "id": self.config.model_name,
            "object": "model",
            "created": 0,
            "owned_by": "rxllm",
        }
        listed = await self._upstream_listing(self.config.model_name)
        if listed is not None:
            if listed.created is not None:
                model["created"] = listed.created
            if listed.owned_by is not None:
                model["owned_by"] = listed.owned_by
        return web.json_response({"object": "list", "data": [model]})

    async def _upstream_listing(self, name: str) -> ListedModel | None:
        """The upstream's entry for *name*, or ``None``: the backend cannot list
        (the scripted one), the listing failed, or it lacks *name* (both logged at WARNING)."""
        list_models = getattr(self.backend, "list_models", None)
        if list_models is None:
            return None
        try:
            listed: list[ListedModel] = await list_models()
        except BackendError as exc:
            logger.warning("the upstream's model listing failed: %s", self.scrub(str(exc)))
            return None
        for entry in listed:
            if entry.id == name:
                return entry
        logger.warning(
            "the upstream does not list the model %r that this gateway serves (it lists %d others); "
            "requests will fail until it has it",
            name,
            len(listed),
        )
        return None

    async def health(self, request: web.Request) -> web.Response:
        """``GET /healthz``: alive, and how many streams this worker runs."""
        return web.json_response(
            {
                "status": "ok",
                "pid": os.getpid(),
                "active_streams": self.active,
                "max_streams": self.config.max_streams,
            }
        )

    # -- POST /v1/chat/completions ---------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """One chat completion, streaming or not."""
        if self.active >= self.config.max_streams:
            return self._json_error(
                RequestError(
                    503,
                    f"this worker runs its limit of {self.config.max_streams} streams; retry shortly",
                    type="server_error",
                    code="overloaded",
                ),
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        self.active += 1
        started = time.perf_counter()
        status = "?"
        chat: ChatRequest | None = None
        outcome = _Outcome()
        try:
            try:
                chat = parse_chat_request(
                    await self._read_json(request), max_messages=self.config.max_messages
                )
                if chat.model != self.config.model_name:
                    raise RequestError(
                        404,
                        f"the model {chat.model!r} does not exist on this gateway; it serves "
                        f"{self.config.model_name!r} (GET /v1/models)",
                        type="invalid_request_error",
                        code="model_not_found",
                        param="model",
                    )
            except RequestError as error:
                status = str(error.status)
                refusal = self._json_error(error)
                if error.status in (408, 413):  # the rest of the body is not read: drop the connection
                    refusal.force_close()
                return refusal
            response = await (
                self._stream(request, chat, outcome) if chat.stream else self._complete(chat, outcome)
            )
            status = str(response.status)
            return response
        except asyncio.CancelledError:
            status = "client left"
            raise
        finally:
            self.active -= 1
            self._log_request(request, status, time.perf_counter() - started, chat, outcome)

    def _log_request(
        self, request: web.Request, status: str, duration: float, chat: ChatRequest | None, outcome: _Outcome
    ) -> None:
        """One INFO record per chat request; its fields are also attributes of the record (for
        ``rxllm serve --log-format json``): method, path, status, duration, stream, failed_check."""
        failed = outcome.failed_check
        check = {key: self.scrub(value) for key, value in failed.items()} if failed is not None else None
        stream = chat.stream if chat is not None else None
        notes = ["stream"] if stream else []
        if check is not None:
            notes.append(f"failed check: {check['requirement']}")
        logger.info(
            "%s %s -> %s in %.3f s%s",
            request.method,
            request.path,
            status,
            duration,
            f" ({', '.join(notes)})" if notes else "",
            extra={
                "method": request.method,
                "path": request.path,
                "status": int(status) if status.isdigit() else status,
                "duration": round(duration, 6),
                "stream": stream,
                "failed_check": check,
            },
        )

    async def _read_json(self, request: web.Request) -> Any:
        limit = self.config.max_body_bytes
        too_large = RequestError(
            413,
            f"the request body is larger than {limit} bytes",
            type="invalid_request_error",
            code="request_too_large",
        )
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        try:
            async with asyncio.timeout(self.config.idle_timeout):
                raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise too_large from None
        except TimeoutError:
            raise RequestError(
                408, "the request body did not arrive in time", type="invalid_request_error", code="timeout"
            ) from None
        try:
            return json.loads(raw)
        except ValueError:
            raise RequestError(
                400, "the request body is not valid JSON", type="invalid_request_error", code="invalid_json"
            ) from None

    async def _start(self, chat: ChatRequest, reqs: list[Requirement]) -> StreamChunkingResult:
        *history, last = chat.messages
        return await stream_with_chunking(
            last,
            self.backend,
            ChatContext(tuple[Message, ...](history)),
            requirements=reqs,
            chunking=self.config.chunking,
            validation_timeout=self.config.validation_timeout,
            retry=self.config.retry(),
            model_options=chat.model_options,
        )

    async def _run(
        self,
        chat: ChatRequest,
        outcome: _Outcome,
        on_chunk: Callable[[str], Awaitable[None]],
    ) -> StreamChunkingResult | None:
        """Run the request through the engine within its deadline; hand each validated chunk to
        *on_chunk*. Leaving early (deadline, client gone, a failed write) cancels the upstream."""
        result: StreamChunkingResult | None = None
        try:
            async with asyncio.timeout(self.config.request_timeout):
                try:
                    reqs = self.requirements()  # fresh for every request: no requirement state is shared
                    result = await self._start(chat, reqs)
                except Exception as exc:  # a custom factory failed, or the upstream refused to start
                    outcome.error = exc
                    return None
                # The chunks without the whitespace between them: the tracker restores it from the text.
                tracker = TextTracker(result.mot, "\n\n" if self.config.chunking == "paragraph" else " ")
                async with result:  # leaving it cancels the run: the upstream stops and its connection closes
                    async for event in result.events():
                        if isinstance(event, ChunkEvent):
                            if tracker.mot is not result.mots[-1]:  # a retry continues the delivered text
                                tracker.follow(result.mots[-1])
                            piece = tracker.piece(event.text)
                            outcome.text.append(piece)
                            await on_chunk(piece)
                        elif isinstance(event, QuickCheckEvent) and not event.passed:
                            outcome.failed_check = self._failure(event.requirements, event.results, "stream")
                        elif isinstance(event, RetryEvent):  # repaired in-stream: the answer goes on
                            outcome.failed_check = None
                        elif isinstance(event, FullValidationEvent) and not event.passed:
                            outcome.failed_check = self._failure(tuple(reqs), event.results, "final")
                        elif isinstance(event, CompletedEvent):
                            outcome.attempts = event.attempts_used
                    try:
                        await result.acomplete()
                    except Exception as exc:
                        outcome.error = exc
        except TimeoutError:
            outcome.timed_out = True
        return result

    @staticmethod
    def _failure(
        requirements: tuple[Any, ...], results: tuple[Any, ...], stage: str
    ) -> dict[str, str] | None:
        for i, res in enumerate(results):
            failed = res.success == "fail" if hasattr(res, "success") else not bool(res)
            if failed:
                name = _label(requirements[i]) if i < len(requirements) else f"requirement {i + 1}"
                return {"requirement": name, "reason": str(res.reason or ""), "stage": stage}
        return None

    def _usage(self, result: StreamChunkingResult | None) -> dict[str, int] | None:
        """The upstream's token usage summed over the attempts that reported it; ``None`` if none did."""
        if result is None:
            return None
        reported = [mot.generation.usage for mot in result.mots if mot.generation.usage]
        if not reported:
            return None
        return {
            key: sum(u.get(key, 0) for u in reported) for key in USAGE_KEYS if any(key in u for u in reported)
        }

    def _finish_reason(self, result: StreamChunkingResult | None, outcome: _Outcome) -> str:
        if outcome.failed_check is not None:
            return "content_filter"
        reason = result.mot.generation.done_reason if result is not None else None
        return "length" if reason == "length" else "stop"

    def _error(self, outcome: _Outcome) -> RequestError:
        if outcome.timed_out:
            return RequestError(
                504,
                f"the request took longer than its deadline of {self.config.request_timeout} s",
                type="timeout",
                code="request_timeout",
            )
        assert outcome.error is not None
        error = failure_of(outcome.error)
        logger.warning("upstream failure: %s", self.scrub(error.log_line))
        return error.request_error

    async def _stream(self, request: web.Request, chat: ChatRequest, outcome: _Outcome) -> web.StreamResponse:
        sse = _SseAnswer(request, chat.model, self.config.idle_timeout)
        try:
            result = await self._run(chat, outcome, sse.content)
            failed = outcome.timed_out or outcome.error is not None
            if failed and sse.response is None:  # nothing sent yet: an error status and body
                return self._json_error(self._error(outcome))
            if failed:
                body = self._error(outcome).body()
                body["error"]["message"] = self.scrub(body["error"]["message"])
                await sse.write(error_frame(body))
            else:
                finish = self._finish_reason(result, outcome)
                await sse.frame(delta={}, finish_reason=finish, extension=outcome.extension())
                usage = self._usage(result) if chat.include_usage else None
                if usage is not None:
                    await sse.write(chunk_frame(sse.ident, sse.model, sse.created, usage=usage))
            await sse.write(done_frame())
            return await sse.end()
        except _ClientGone as gone:  # the run was cancelled on the way out; nobody is left to tell
            logger.info("client gone mid-stream (%s)", gone)
            return sse.response if sse.response is not None else web.Response(status=499)

    async def _complete(self, chat: ChatRequest, outcome: _Outcome) -> web.Response:

        async def on_chunk(text: str) -> None:
            return None

        result = await self._run(chat, outcome, on_chunk)
        if outcome.timed_out or outcome.error is not None:
            return self._json_error(self._error(outcome))
        body = completion_body(
            completion_id(),
            chat.model,
            now(),
            text="".join(outcome.text),
            finish_reason=self._finish_reason(result, outcome),
            usage=self._usage(result),
            extension=outcome.extension(),
        )
        headers = {}
        if outcome.failed_check is not None:
            check = outcome.failed_check
            headers[FAILED_CHECK_HEADER] = _header_safe(f"{check['requirement']}: {check['reason']}")
        return web.json_response(body, headers=headers)


GATEWAY = web.AppKey("gateway", Gateway)
"""The :class:`Gateway` of an application: ``app[GATEWAY]``."""


def create_app(config: GatewayConfig | None = None, *, backend: Backend | None = None) -> web.Application:
    """The gateway as an aiohttp application.

    Without *config* (``gunicorn 'engine.gateway:create_app()'``, called in each worker) the
    configuration is read from ``$RXLLM_SERVE_CONFIG`` (TOML) and the environment, a client
    key is required unless it says ``allow_unauthenticated = true``, and OpenTelemetry's
    exporters are set up as the environment asks (``RXLLM_METRICS_PROMETHEUS=1`` for
    ``GET /metrics``; see :func:`~engine.telemetry_export.configure_from_environment`).
    *backend* replaces the configured upstream (tests, embedding).
    """
    if config is None:
        config = config_from_environment()
        configure_from_environment()  # this process is the application: it owns the global providers
    gateway = Gateway(config, backend)
    app = web.Application(
        client_max_size=config.max_body_bytes,
        middlewares=[gateway.guard],
        # A client that disconnects cancels its handler (and so its upstream generation) under any
        # runner; an idle keep-alive connection is closed after idle_timeout; the unread rest of a
        # refused body is drained for at most a second (aiohttp's default: 10 s), then the socket closes.
        handler_args={
            "handler_cancellation": True,
            "keepalive_timeout": config.idle_timeout,
            "lingering_time": min(1.0, config.idle_timeout),
        },
    )
    app[GATEWAY] = gateway
    app.cleanup_ctx.append(gateway.lifetime)
    app.router.add_post("/v1/chat/completions", gateway.chat)
    app.router.add_get("/v1/models", gateway.models)
    app.router.add_get("/healthz", gateway.health)
    # Prometheus text where metrics are on, else 404 saying how to switch them on.
    app.router.add_get("/metrics", metrics_handler())
    return app
