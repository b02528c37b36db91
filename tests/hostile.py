"""A raw loopback HTTP server that controls every byte, for the hostile-server tests.

``RawServer(*answers)`` listens on ``127.0.0.1`` (port 0) with ``asyncio.start_server``;
each connection reads one request (headers and a ``Content-Length`` body, recorded in
``requests``) and is answered by the next answer (the last one repeats): ``bytes`` are
written as they are and the connection is closed; a coroutine function
``answer(request, writer)`` does anything (stall, reset, write slowly).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any

import attrs

__all__ = ["RawRequest", "RawServer", "http_response", "ndjson_lines", "sse_events"]


@attrs.define
class RawRequest:
    """One request as the server read it."""

    head: bytes
    body: bytes

    @property
    def headers(self) -> dict[str, str]:
        """Header names (lower-cased) to values."""
        lines = self.head.decode("latin-1").split("\r\n")[1:]
        return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}

    @property
    def json(self) -> Any:
        """The body, parsed."""
        return json.loads(self.body)


Answer = bytes | Callable[[RawRequest, asyncio.StreamWriter], Awaitable[None]]


def http_response(
    body: bytes = b"",
    *,
    status: str = "200 OK",
    content_type: str | None = "application/json",
    headers: Sequence[tuple[str, str]] = (),
    length: bool = True,
) -> bytes:
    """A whole HTTP/1.1 response (``Connection: close``), with Content-Length unless *length* is False."""
    lines = [f"HTTP/1.1 {status}", "Connection: close"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    if length:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def sse_events(*objects: Any, done: bool = True) -> bytes:
    """An OpenAI event-stream body: one ``data:`` event per object (JSON), then ``[DONE]``."""
    out = b"".join(b"data: " + json.dumps(o).encode() + b"\n\n" for o in objects)
    return out + (b"data: [DONE]\n\n" if done else b"")


def openai_chunk(content: str | None = None, finish_reason: str | None = None) -> dict[str, Any]:
    """One ``chat.completion.chunk``."""
    delta = {} if content is None else {"content": content}
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def ndjson_lines(*objects: Any) -> bytes:
    """An Ollama NDJSON body."""
    return b"".join(json.dumps(o).encode() + b"\n" for o in objects)


class RawServer:
    """See the module docstring."""

    def __init__(self, *answers: Answer) -> None:
        assert answers
        self.answers = list(answers)
        self.requests: list[RawRequest] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def root(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request = RawRequest(head, b"")
            length = int(request.headers.get("content-length", "0"))
            request.body = await reader.readexactly(length) if length else b""
            answer = self.answers[min(len(self.requests), len(self.answers) - 1)]
            self.requests.append(request)
            if isinstance(answer, bytes):
                writer.write(answer)
                await writer.drain()
            else:
                await answer(request, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def reset(writer: asyncio.StreamWriter) -> None:
    """Drop the connection with a TCP RST."""
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        import socket
        import struct

        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
