"""Loopback fake model servers that speak Ollama's and OpenAI's streaming wire formats.

For tests and benchmarks: real aiohttp servers on ``127.0.0.1`` (port 0), on the
running event loop, scripted per request, recording what they received, every frame
they wrote and the moment they saw the client disconnect.

```python
from tests.fake_servers import FakeOllamaServer, FakeOpenAIServer, Reply

async with FakeOllamaServer(Reply(deltas=["Hel", "lo"], delay=0.01)) as server:
    backend = OllamaBackend("m", base_url=server.url)        # FakeOpenAIServer: base_url=server.url (ends in /v1)
    ...
    record = server.requests[-1]                              # a RequestRecord
    await record.wait_disconnected(within=2.0)               # perf_counter() when the server saw the client go
    record.frames_written_after(verdict_time)                 # frames written after a perf_counter() reading
```

* ``server.reply`` answers every request; ``server.enqueue(reply, ...)`` queues one-shot
  replies used first, in order.
* A :class:`Reply` scripts the deltas, pacing (``delay`` before each frame,
  ``headers_delay`` before the status line), error statuses (``status``, ``error``,
  ``headers`` such as Retry-After), a mid-stream error frame (``error_after``), raw
  garbage bytes before a frame (``garbage``), how the stream ends (``ending``: ``"done"``
  with the terminal frame, ``"eof"`` a clean end without it, ``"close"`` the server
  drops the connection, ``"hang"`` it goes silent until the client leaves), and how the
  body is cut into TCP writes (``write_size``, ``split_at``).
* Frames are what the real servers send: Ollama NDJSON ``message`` objects and a
  ``done: true`` object with ``done_reason`` and counts; OpenAI ``chat.completion.chunk``
  events (role chunk, content chunks, a ``finish_reason`` chunk, a usage chunk with
  empty ``choices`` when ``stream_options.include_usage`` is set, then
  ``data: [DONE]``). Non-streaming requests get the single JSON object.

* A "frame" is one delta's write (for OpenAI the first one also carries the role chunk),
  or one write of the ending; in piece mode, one piece. ``RequestRecord`` keeps the
  request ``body`` (parsed JSON), ``headers``, the client's ``peer`` address (equal for
  requests that reused a pooled connection), ``frame_times``, ``completed_at``,
  ``disconnected_at``; ``await server.wait_request(n)`` and ``await record.wait_frames(n)``
  wait for progress without sleeping.

Timestamps are ``time.perf_counter()`` readings, comparable with the engine's
``GenerationInfo`` fields.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs
from aiohttp import web

__all__ = ["FakeOllamaServer", "FakeOpenAIServer", "FakeServer", "Reply", "RequestRecord"]

Ending = Literal["done", "eof", "close", "hang"]


@attrs.frozen
class Reply:
    """How a fake server answers one request (see the module docstring)."""

    deltas: Sequence[str] = attrs.field(default=("Hello", ", ", "world", "."), converter=tuple)
    delay: float = 0.0
    """Seconds slept before each frame (and before each piece in piece mode)."""
    headers_delay: float = 0.0
    """Seconds slept before the status line and headers are sent."""
    status: int = 200
    error: str | None = None
    """The server's error text: the body of a non-200 status, or of the frame sent at ``error_after``."""
    error_after: int | None = None
    """Send an error frame (with ``error``) after this many deltas, then end the body."""
    headers: Mapping[str, str] = attrs.field(factory=dict)
    ending: Ending = "done"
    done_reason: str = "stop"
    usage: tuple[int, int] | None = (7, -1)
    """(prompt tokens, completion tokens); -1 means the number of deltas; None sends no usage."""
    garbage: Mapping[int, bytes] = attrs.field(factory=dict)
    """Raw bytes written before delta *i* (``len(deltas)``: before the ending)."""
    write_size: int | None = None
    """Piece mode: build the whole body, then write it in pieces of this many bytes."""
    split_at: int | None = None
    """Piece mode: write the whole body in two writes, split at this byte offset."""
    piece_delay: float = 0.001
    """Seconds between pieces in piece mode (so the client reads them separately)."""
    sse_crlf: bool = False
    """OpenAI: end SSE lines with CRLF instead of LF."""
    sse_comments: bool = False
    """OpenAI: send a ``: keep-alive`` comment before every event."""
    sse_multiline: bool = False
    """OpenAI: spread each event's JSON over several ``data:`` lines."""
    sse_event_fields: bool = False
    """OpenAI: add ``event: message`` and ``id:`` lines to every event."""


@attrs.define(eq=False)
class RequestRecord:
    """What one request sent and what the server did with it."""

    path: str
    body: Any
    headers: dict[str, str]
    received_at: float
    peer: tuple[str, int] | None = None
    """The client's (address, port): equal for requests that shared a pooled connection."""
    frame_times: list[float] = attrs.field(factory=list)
    """perf_counter() after each frame (or piece) was handed to the socket."""
    disconnected_at: float | None = None
    """When the server saw the client disconnect before the reply was complete."""
    completed_at: float | None = None
    """When the server finished writing the reply."""
    server_closed: bool = False
    """True if the server dropped the connection itself (``ending="close"``)."""
    _disconnected: asyncio.Event = attrs.field(factory=asyncio.Event, repr=False)
    _frame_written: asyncio.Event = attrs.field(factory=asyncio.Event, repr=False)

    @property
    def frames_written(self) -> int:
        """Frames written so far."""
        return len(self.frame_times)

    def frames_written_after(self, when: float) -> int:
        """Frames written after the perf_counter() reading *when*."""
        return sum(1 for t in self.frame_times if t > when)

    async def wait_disconnected(self, within: float = 5.0) -> float:
        """Wait until the server sees the client disconnect; return when it did."""
        await asyncio.wait_for(self._disconnected.wait(), within)
        assert self.disconnected_at is not None
        return self.disconnected_at

    async def wait_frames(self, count: int, within: float = 5.0) -> None:
        """Wait until at least *count* frames were written."""
        async with asyncio.timeout(within):
            while len(self.frame_times) < count:
                self._frame_written.clear()
                await self._frame_written.wait()

    def _frame(self) -> None:
        self.frame_times.append(time.perf_counter())
        self._frame_written.set()

    def _client_left(self) -> None:
        if self.disconnected_at is None and not self.server_closed:
            self.disconnected_at = time.perf_counter()
            self._disconnected.set()


class FakeServer:
    """Base of the fake servers: lifecycle, recording, reply selection and pacing."""

    path = ""
    prefix = ""

    def __init__(self, reply: Reply | None = None, *, model: str | None = None) -> None:
        self.reply = reply if reply is not None else Reply()
        """The default reply for every request."""
        self.model = model
        """Model name echoed in frames (default: the requested one)."""
        self.queue: deque[Reply] = deque()
        self.requests: list[RequestRecord] = []
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._request_seen = asyncio.Event()

    @property
    def root(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self._port}"

    @property
    def url(self) -> str:
        """The base URL a backend takes."""
        return self.root + self.prefix

    def enqueue(self, *replies: Reply) -> None:
        """Answer the next requests with *replies*, in order, before falling back to ``reply``."""
        self.queue.extend(replies)

    async def wait_request(self, count: int = 1, within: float = 5.0) -> RequestRecord:
        """Wait until *count* requests arrived; return the *count*-th."""
        async with asyncio.timeout(within):
            while len(self.requests) < count:
                self._request_seen.clear()
                await self._request_seen.wait()
        return self.requests[count - 1]

    async def start(self) -> None:
        """Listen on 127.0.0.1, an ephemeral port."""
        app = web.Application()
        app.router.add_post(self.path, self._handle)
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
        await runner.setup()
        self._runner = runner
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
        except BaseException:
            # A half-started server left listening makes the loop's close() fail or, on uvloop
            # with ResourceWarning as an error, never return.
            await self.close()
            raise
        # The runner's public address list: any loop's server (uvloop's is no asyncio.Server).
        self._port = runner.addresses[0][1]

    async def close(self) -> None:
        """Stop listening and drop open connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- serving --------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        record = RequestRecord(
            request.path, body, dict(request.headers), time.perf_counter(), tuple(peer[:2]) if peer else None
        )
        self.requests.append(record)
        self._request_seen.set()
        reply = self.queue.popleft() if self.queue else self.reply
        try:
            return await self._serve(request, record, reply, body if isinstance(body, dict) else {})
        except (asyncio.CancelledError, ConnectionError):
            record._client_left()
            raise

    async def _serve(
        self, request: web.Request, record: RequestRecord, reply: Reply, body: dict[str, Any]
    ) -> web.StreamResponse:
        if reply.headers_delay:
            await asyncio.sleep(reply.headers_delay)
        model = self.model or str(body.get("model", "fake"))
        if reply.status != 200:
            response = web.Response(
                status=reply.status,
                body=self.error_body(reply.error or "error", reply.status),
                content_type="application/json",
                headers=dict(reply.headers),
            )
            record.completed_at = time.perf_counter()
            return response
        stream = bool(body.get("stream", self.stream_default))
        if not stream:
            response = web.Response(
                body=self.whole_body(reply, model, body),
                content_type="application/json",
                headers=dict(reply.headers),
            )
            record.completed_at = time.perf_counter()
            return response
        response = web.StreamResponse(headers={"Content-Type": self.content_type, **reply.headers})
        await response.prepare(request)
        frames = self.frames(reply, model, body)
        if reply.write_size is not None or reply.split_at is not None:
            whole = b"".join(frames)
            if reply.split_at is not None:
                pieces = [whole[: reply.split_at], whole[reply.split_at :]]
            else:
                size = max(1, reply.write_size or 1)
                pieces = [whole[i : i + size] for i in range(0, len(whole), size)]
            for i, piece in enumerate(pieces):
                if i:
                    await asyncio.sleep(reply.piece_delay + reply.delay)
                if piece:
                    await response.write(piece)
                record._frame()
        else:
            for frame in frames:
                if reply.delay:
                    await asyncio.sleep(reply.delay)
                await response.write(frame)
                record._frame()
        if reply.ending == "close":
            record.server_closed = True
            assert request.transport is not None
            request.transport.close()
            await asyncio.sleep(3600)  # cancelled by connection_lost
        if reply.ending == "hang":
            await asyncio.sleep(3600)  # until the client gives up
        await response.write_eof()
        record.completed_at = time.perf_counter()
        return response

    def frames(self, reply: Reply, model: str, body: dict[str, Any]) -> list[bytes]:
        """Every frame of a streaming reply, garbage included, in order."""
        out: list[bytes] = []
        deltas = list(reply.deltas)
        for i, delta in enumerate(deltas):
            if reply.error_after is not None and i == reply.error_after:
                out.append(self.error_frame(reply))
                return out
            if i in reply.garbage:
                out.append(reply.garbage[i])
            out.append(self.delta_frame(reply, model, delta, body, first=i == 0))
        if reply.error_after is not None and reply.error_after >= len(deltas):
            out.append(self.error_frame(reply))
            return out
        if len(deltas) in reply.garbage:
            out.append(reply.garbage[len(deltas)])
        if reply.ending == "done":
            out.extend(self.final_frames(reply, model, body))
        return out

    def usage(self, reply: Reply) -> tuple[int, int] | None:
        """(prompt, completion) token counts for *reply*."""
        if reply.usage is None:
            return None
        prompt, completion = reply.usage
        return prompt, len(reply.deltas) if completion < 0 else completion

    # -- the wire format (subclasses) ------------------------------------------------------

    content_type = "application/octet-stream"
    stream_default = False

    def delta_frame(
        self, reply: Reply, model: str, delta: str, body: dict[str, Any], *, first: bool
    ) -> bytes:
        """One content frame (the first one of a stream has ``first=True``)."""
        raise NotImplementedError

    def final_frames(self, reply: Reply, model: str, body: dict[str, Any]) -> list[bytes]:
        """The frames that end a complete stream."""
        raise NotImplementedError

    def error_frame(self, reply: Reply) -> bytes:
        """An error reported inside the stream."""
        raise NotImplementedError

    def error_body(self, message: str, status: int) -> bytes:
        """The body of an error status."""
        raise NotImplementedError

    def whole_body(self, reply: Reply, model: str, body: dict[str, Any]) -> bytes:
        """The single JSON answer of a non-streaming request."""
        raise NotImplementedError


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())


class FakeOllamaServer(FakeServer):
    """Ollama's ``POST /api/chat`` (NDJSON when streaming, the default as in Ollama)."""

    path = "/api/chat"
    content_type = "application/x-ndjson"
    stream_default = True

    def delta_frame(
        self, reply: Reply, model: str, delta: str, body: dict[str, Any], *, first: bool
    ) -> bytes:
        obj = {
            "model": model,
            "created_at": _now_iso(),
            "message": {"role": "assistant", "content": delta},
            "done": False,
        }
        return json.dumps(obj, ensure_ascii=False).encode() + b"\n"

    def _final(self, reply: Reply, model: str, content: str) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "model": model,
            "created_at": _now_iso(),
            "message": {"role": "assistant", "content": content},
            "done_reason": reply.done_reason,
            "done": True,
            "total_duration": 4_353_619_900,
            "load_duration": 63_915_300,
        }
        usage = self.usage(reply)
        if usage is not None:
            obj.update(
                prompt_eval_count=usage[0],
                prompt_eval_duration=246_847_000,
                eval_count=usage[1],
                eval_duration=4_032_296_000,
            )
        return obj

    def final_frames(self, reply: Reply, model: str, body: dict[str, Any]) -> list[bytes]:
        return [json.dumps(self._final(reply, model, ""), ensure_ascii=False).encode() + b"\n"]

    def error_frame(self, reply: Reply) -> bytes:
        return json.dumps({"error": reply.error or "error"}).encode() + b"\n"

    def error_body(self, message: str, status: int) -> bytes:
        return json.dumps({"error": message}).encode()

    def whole_body(self, reply: Reply, model: str, body: dict[str, Any]) -> bytes:
        return json.dumps(self._final(reply, model, "".join(reply.deltas)), ensure_ascii=False).encode()


class FakeOpenAIServer(FakeServer):
    """An OpenAI-compatible ``POST /v1/chat/completions`` (SSE when ``stream`` is true)."""

    path = "/v1/chat/completions"
    prefix = "/v1"
    content_type = "text/event-stream"
    stream_default = False

    def __init__(self, reply: Reply | None = None, *, model: str | None = None) -> None:
        super().__init__(reply, model=model)
        self._ids = 0

    def _event(self, reply: Reply, data: str) -> bytes:
        eol = "\r\n" if reply.sse_crlf else "\n"
        lines: list[str] = []
        if reply.sse_comments:
            lines.append(": keep-alive")
        if reply.sse_event_fields:
            self._ids += 1
            lines.append("event: message")
            lines.append(f"id: {self._ids}")
        if reply.sse_multiline and data.startswith("{"):
            # JSON allows a newline between tokens: break after every comma.
            parts = data.split(", ")
            lines.extend(f"data: {part}{',' if i < len(parts) - 1 else ''}" for i, part in enumerate(parts))
        else:
            lines.append(f"data: {data}")
        return (eol.join(lines) + eol + eol).encode()

    def _chunk(self, model: str, choices: list[dict[str, Any]], body: dict[str, Any], **extra: Any) -> str:
        obj: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": choices,
        }
        if _include_usage(body):
            obj["usage"] = None
        obj.update(extra)
        return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))

    def delta_frame(
        self, reply: Reply, model: str, delta: str, body: dict[str, Any], *, first: bool
    ) -> bytes:
        out = b""
        if first:
            role = {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
            out += self._event(reply, self._chunk(model, [role], body))
        choice = {"index": 0, "delta": {"content": delta}, "logprobs": None, "finish_reason": None}
        return out + self._event(reply, self._chunk(model, [choice], body))

    def final_frames(self, reply: Reply, model: str, body: dict[str, Any]) -> list[bytes]:
        finish = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": reply.done_reason}
        out = [self._event(reply, self._chunk(model, [finish], body))]
        usage = self.usage(reply)
        if _include_usage(body) and usage is not None:
            counts = {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}
            out.append(self._event(reply, self._chunk(model, [], body, usage=counts)))
        out.append(self._event(reply, "[DONE]"))
        return out

    def error_frame(self, reply: Reply) -> bytes:
        error = {"error": {"message": reply.error or "error", "type": "server_error", "code": None}}
        return self._event(reply, json.dumps(error))

    def error_body(self, message: str, status: int) -> bytes:
        kind = {401: "invalid_request_error", 404: "invalid_request_error", 429: "requests"}.get(
            status, "server_error"
        )
        code = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}.get(status)
        return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()

    def whole_body(self, reply: Reply, model: str, body: dict[str, Any]) -> bytes:
        obj: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(reply.deltas)},
                    "logprobs": None,
                    "finish_reason": reply.done_reason,
                }
            ],
        }
        usage = self.usage(reply)
        if usage is not None:
            obj["usage"] = {
                "prompt_tokens": usage[0],
                "completion_tokens": usage[1],
                "total_tokens": sum(usage),
            }
        return json.dumps(obj, ensure_ascii=False).encode()


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))
