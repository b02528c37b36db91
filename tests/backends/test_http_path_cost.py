"""What the HTTP streaming path costs per delta and keeps per stream, counted (not timed).

A loopback SSE server (plain asyncio streams, frames prepared beforehand, so that none of
its calls land in the counted modules) sends OpenAI chunks one write each, a few
milliseconds apart, so that the client reads them one by one as it does from a real
server. The bounds sit between what the path costs now and what it cost before the
cuts they pin (a generator and collector per read, json.loads' three frames per chunk,
an iterator coroutine per read, a JSON body decoder built for every stream, the redacted
URL made twice, the encoded request body kept while the stream is read), on asyncio and
on uvloop; a frame coalesced with the next one only lowers the counts.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import sys
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from backends import OpenAIBackend
from engine import ModelOption, SimpleContext
from tests.hostile import openai_chunk

STREAM = {ModelOption.STREAM: True}
_BACKENDS_DIR = str(Path(__file__).resolve().parents[2] / "backends")


def _chunk(content: str | None = None, finish: str | None = None) -> bytes:
    """One event as OpenAI sends it: compact JSON with the id, creation time and model."""
    chunk = {"id": "c", "created": 0, "model": "m", **openai_chunk(content, finish)}
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


@asynccontextmanager
async def _sse_server(
    n_deltas: int, hold_after: int | None = None
) -> AsyncIterator[tuple[str, asyncio.Event]]:
    """Serve *n_deltas* 4-character deltas per request; with *hold_after*, stop after that many
    while the yielded event is clear (it starts set)."""
    frames = [_chunk(f"d{k:03d}") for k in range(n_deltas)]
    end = _chunk(finish="stop") + b"data: [DONE]\n\n"
    release = asyncio.Event()
    release.set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
            for k, frame in enumerate(frames):
                if k == hold_after:
                    await release.wait()
                await asyncio.sleep(0.002)
                writer.write(frame)
            writer.write(end)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1", release
    finally:
        release.set()
        server.close()
        await server.wait_closed()


def _counted(filename: str) -> bool:
    """The HTTP path's code: this project's backends, the JSON decoder, aiohttp's client."""
    return (
        filename.startswith(_BACKENDS_DIR)
        or "backends.sse" in filename  # attrs' generated methods of SSEEvent
        or f"{'/'}json{'/'}" in filename
        or "/aiohttp/" in filename
    )


@pytest.mark.asyncio
async def test_a_streamed_openai_delta_costs_at_most_33_python_calls_in_the_http_path() -> None:
    n_deltas = 150
    calls: collections.Counter[str] = collections.Counter()

    def profiler(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and _counted(frame.f_code.co_filename):
            calls[f"{frame.f_code.co_filename}:{frame.f_code.co_name}"] += 1

    async with _sse_server(n_deltas) as (url, _), OpenAIBackend("m", base_url=url) as backend:
        warm, _ = await backend.generate_from_context("hi", SimpleContext(), model_options=STREAM)
        await warm.avalue()  # the pool's connector and first-call caches outside the count
        sys.setprofile(profiler)
        try:
            thunk, _ = await backend.generate_from_context("hi", SimpleContext(), model_options=STREAM)
            text = await thunk.avalue()
        finally:
            sys.setprofile(None)
    assert text == "".join(f"d{k:03d}" for k in range(n_deltas))
    per_delta = calls.total() / n_deltas
    # Measured: 29.5 (asyncio), the request and response set-up included; 38.6 before the cuts.
    assert per_delta <= 33, (per_delta, calls.most_common(25))


@pytest.mark.asyncio
async def test_a_running_openai_stream_keeps_at_most_4_300_bytes_allocated_by_the_backends_code() -> None:
    streams = 20
    held_after = 3
    async with (
        _sse_server(10, hold_after=held_after) as (url, release),
        OpenAIBackend("m", base_url=url) as backend,
    ):
        warm, _ = await backend.generate_from_context("hi", SimpleContext(), model_options=STREAM)
        await warm.avalue()
        release.clear()
        gc.collect()
        tracemalloc.start(40)
        try:
            before = tracemalloc.take_snapshot()
            thunks = [
                (await backend.generate_from_context("hi", SimpleContext(), model_options=STREAM))[0]
                for _ in range(streams)
            ]
            async with asyncio.timeout(10):
                while any(t.generation.deltas_sent < held_after for t in thunks):
                    await asyncio.sleep(0.005)
            gc.collect()
            during = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        release.set()
        assert [len(await t.avalue()) for t in thunks] == [40] * streams
    kept = collections.Counter[str]()
    for stat in during.compare_to(before, "traceback"):
        innermost = stat.traceback[-1]  # the frame that allocated (aiohttp's objects: in aiohttp)
        if innermost.filename.startswith(_BACKENDS_DIR) and stat.size_diff > 0:
            kept[f"{innermost.filename.rsplit('/', 1)[-1]}:{innermost.lineno}"] += stat.size_diff
    per_stream = kept.total() / streams
    # What the backend's own code allocated and still holds (aiohttp's request, response and
    # connection objects are allocated in aiohttp: not counted): the generation's record, the
    # reading generator and its closures, the parser, the request body kept for a fallback,
    # the three deltas' text, the idle timer (a Python object on uvloop). Measured: 3,509 bytes
    # on asyncio, 4,074 on uvloop; before the cuts 4,475 and 5,038 (a JSON body decoder per
    # stream, the redacted URL twice, the encoded request body).
    assert per_stream <= 4_300, (per_stream, kept.most_common(15))
