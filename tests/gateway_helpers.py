"""Helpers for the gateway's tests: the gateway on a loopback port in front of a loopback fake upstream."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from engine.gateway import GATEWAY, Gateway, create_app, load_config
from tests.fake_servers import FakeOpenAIServer, Reply

MODEL = "m"
SLOW = Reply(deltas=[f"Sentence {i} is here. " for i in range(200)], delay=0.02)
"""An upstream answer that keeps streaming for seconds: cancellation must end it early."""
HANGS = Reply(deltas=["Sentence 0 is here. ", "Sentence 1 is here. "], ending="hang")
"""An upstream that sends one sentence, then nothing until its client leaves: only a disconnect
that the gateway notices at once (not at its next write) ends it."""


@contextlib.asynccontextmanager
async def running(app: web.Application) -> AsyncIterator[str]:
    """Serve *app* on 127.0.0.1 (an ephemeral port); yield its root URL."""
    runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        # aiohttp's public list of bound addresses: the server object is loop-specific (uvloop's
        # is no asyncio.Server).
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def gateway(
    reply: Reply | None = None, **config: Any
) -> AsyncIterator[tuple[str, FakeOpenAIServer, Gateway]]:
    """A fake OpenAI upstream answering *reply*, and a gateway in front of it configured with *config*;
    yield ``(gateway root URL, upstream, the Gateway)``."""
    async with FakeOpenAIServer(reply) as upstream:
        settings = {"backend": "openai", "base_url": upstream.url, "model": MODEL, **config}
        app = create_app(load_config(settings, environ={}))
        async with running(app) as root:
            yield root, upstream, app[GATEWAY]


def chat_body(content: str = "Hi", **fields: Any) -> dict[str, Any]:
    """A minimal chat-completions request body."""
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **fields}


def sse_events(text: str) -> list[Any]:
    """The ``data:`` payloads of an SSE body: parsed JSON, or the string ``"[DONE]"``."""
    out: list[Any] = []
    for block in text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                data = line[len("data: ") :]
                out.append(data if data == "[DONE]" else json.loads(data))
    return out


async def raw_request(
    root: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a socket to the gateway and send a POST /v1/chat/completions; return the streams."""
    host, port = root.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    payload = json.dumps(body).encode()
    lines = [
        "POST /v1/chat/completions HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
    await writer.drain()
    return reader, writer


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close a client socket and wait for it."""
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


FACTORY_CALLS: list[Any] = []
"""Every requirement :func:`counting_requirements` made, in order."""


def counting_requirements() -> list[Any]:
    """A ``requirements`` factory for the tests: a fresh ForbiddenWords on every call, recorded."""
    from engine import ForbiddenWords

    req = ForbiddenWords(["Celsius"])
    FACTORY_CALLS.append(req)
    return [req]


def fails_after_start_up() -> list[Any]:
    """A ``requirements`` factory that works once (the start-up check), then raises on every request."""
    FACTORY_CALLS.append(None)
    if len(FACTORY_CALLS) > 1:
        raise RuntimeError("the rules file vanished")
    return []
