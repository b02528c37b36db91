"""HTTP fan-out: N concurrent streams from a loopback SSE server in another process, against the raw floor.

A server process (OpenAI chat-completions wire format, ``Connection: close``) answers
each request with one 4-character delta every 20 ms on a fixed schedule (delta *k* at
the request's arrival + (k + 1) x 20 ms, absolute: a slow client does not slow it
down). The client process (pinned to one core where the OS allows) opens N streams,
started evenly over a ramp, and measures in a window after a warm-up:

- delay from the client's socket read of a delta (aiohttp's ``StreamReader.feed_data``
  taking the bytes of its frame, the first code that sees them) to the consumer having
  it: p50 and p99. For the floor every delta; for rxllm the delta that completes a
  sentence, up to the consumer reading that chunk's ``ChunkEvent``;
- CPU µs per delta (client ``process_time`` in the window / deltas read in it) and the
  server's CPU share;
- RSS KiB per stream: (client RSS at the end of the window - RSS before the streams) / N.

Sides, each in a fresh client process and a fresh server process, alternating:

- ``floor``: a raw aiohttp client parsing the SSE lines and the JSON, no validation;
- ``rxllm``: ``OpenAIBackend`` + ``stream_with_chunking`` (sentence chunking, three
  no-op requirements, every event read);
- ``mellea-0.8.0``: Mellea's own ``OpenAIBackend`` (the official ``openai`` client) +
  ``stream(..., as_events=True)``, the same chunking and requirements, run by the
  interpreter of the Mellea 0.8.0 virtualenv ``make bench`` builds (skipped, and said,
  when it is missing). Its socket reads are timed at the same place: the protocol's
  ``data_received`` (anyio's, under httpx), as shipped (its thunk hands deltas on in
  batches of at least four, which adds about 60 ms; that is the delay its users see).

The floor and rxllm run with the default asyncio loop and with uvloop (when installed);
Mellea with asyncio, as it ships. Reported: the largest N on the grid with p99 < 10 ms,
per side and loop.

Run: ``python benchmarks/http_fanout.py [--quick] [--out PATH]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import math
import os
import statistics
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any

from _harness import (
    ENGINE_VERSIONS,
    RESULTS_DIR,
    make_text,
    package_versions,
    parse_args,
    percentile,
    split_deltas,
    write_result,
)

PERIOD = 0.02
DELTA_SIZE = 4
TARGET_P99_MS = 10.0
MELLEA = "mellea-0.8.0"
SIDES = ("floor", "rxllm", MELLEA)
MELLEA_PYTHON = Path(__file__).resolve().parent / ".mellea08-venv" / "bin" / "python"

COLUMNS = [
    ("streams", "streams"),
    ("side", "side"),
    ("loop", "loop"),
    ("delay_p50_ms", "read → consumer p50 (ms)"),
    ("delay_p99_ms", "p99 (ms)"),
    ("cpu_us_per_delta", "client CPU µs/delta"),
    ("delivered_rate", "delivered / offered"),
    ("rss_kib_per_stream", "RSS KiB/stream"),
    ("server_cpu_share", "server CPU share"),
    ("errors", "errors"),
]


# -- the server process ---------------------------------------------------------------------


def _frame(content: str | None, finish: str | None) -> bytes:
    delta = {"content": content} if content is not None else {}
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


class _SSEProtocol(asyncio.Protocol):
    """One connection: read the request, then write the frames on their fixed schedule."""

    def __init__(self, frames: list[bytes], end: bytes) -> None:
        self.frames = frames
        self.end = end
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.started = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.started:
            return
        self.buffer += data
        head, sep, body = self.buffer.partition(b"\r\n\r\n")
        if not sep:
            return
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(body) < length:
            return
        self.started = True
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Connection: close\r\n\r\n"
        )
        loop = asyncio.get_running_loop()
        self._schedule(loop, loop.time(), 0)

    def _schedule(self, loop: asyncio.AbstractEventLoop, start: float, k: int) -> None:
        loop.call_at(start + (k + 1) * PERIOD, self._send, loop, start, k)

    def _send(self, loop: asyncio.AbstractEventLoop, start: float, k: int) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if k < len(self.frames):
            transport.write(self.frames[k])
            self._schedule(loop, start, k + 1)
        else:
            transport.write(self.end)
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def _serve(n_deltas: int) -> None:
    deltas = _script(n_deltas)
    frames = [_frame(d, None) for d in deltas]
    end = _frame(None, "stop") + b"data: [DONE]\n\n"
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _SSEProtocol(frames, end), "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await loop.run_in_executor(None, sys.stdin.read)  # until the client closes our stdin
    usage = {"cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - wall0}
    print(json.dumps(usage), flush=True)
    server.close()


def _script(n_deltas: int) -> list[str]:
    return split_deltas(make_text(n_deltas * DELTA_SIZE, seed=7), DELTA_SIZE)[:n_deltas]


# -- the client process -----------------------------------------------------------------------

# Socket reads, per stream: the consumer's task registers its list; the reader's feed_data fills it.
_READS: dict[int, array[float]] = {}
_STREAM_READS: contextvars.ContextVar[array[float]] = contextvars.ContextVar("stream_reads")


def _instrument_aiohttp() -> None:
    """Time every socket read of a registered response body, once per SSE frame it carries."""
    from aiohttp import streams

    feed_data = streams.StreamReader.feed_data
    perf_counter = time.perf_counter

    def timed_feed_data(self: Any, data: bytes, *args: Any) -> None:
        reads = _READS.get(id(self))
        if reads is not None:
            now = perf_counter()
            for _ in range(data.count(b"data: ")):
                reads.append(now)
        feed_data(self, data, *args)

    streams.StreamReader.feed_data = timed_feed_data  # type: ignore[method-assign]
    # Registered as the body's reader is made (in the task that reads the stream, whose
    # context holds that stream's list), so no frame is read before it is timed.
    init = streams.StreamReader.__init__

    def registering_init(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        reads = _STREAM_READS.get(None)
        if reads is not None:
            _READS[id(self)] = reads

    streams.StreamReader.__init__ = registering_init  # type: ignore[method-assign]


def _instrument_anyio() -> None:
    """The same timing for httpx (Mellea's client): anyio's protocol receives the socket's bytes."""
    from anyio._backends import _asyncio

    protocol = _asyncio.StreamProtocol
    data_received, connection_made = protocol.data_received, protocol.connection_made
    perf_counter = time.perf_counter

    def timed_data_received(self: Any, data: bytes) -> None:
        reads = _READS.get(id(self))
        if reads is not None:
            now = perf_counter()
            for _ in range(data.count(b"data: ")):
                reads.append(now)
        data_received(self, data)

    def registering_connection_made(self: Any, transport: Any) -> None:
        # Scheduled with the context of the task that connects: the stream's own list.
        connection_made(self, transport)
        reads = _STREAM_READS.get(None)
        if reads is not None:
            _READS[id(self)] = reads

    protocol.data_received = timed_data_received  # type: ignore[method-assign]
    protocol.connection_made = registering_connection_made  # type: ignore[method-assign]


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def _chunk_texts(deltas: list[str]) -> list[str]:
    from operators import Chunker, SentenceChunking

    chunker = Chunker(SentenceChunking())
    return [str(c) for delta in deltas for c in chunker.feed(delta)]


def _release_points(deltas: list[str]) -> list[int]:
    from operators import Chunker, SentenceChunking

    chunker = Chunker(SentenceChunking())
    points: list[int] = []
    for i, delta in enumerate(deltas):
        points.extend(i for _ in chunker.feed(delta))
    return points


class _Window:
    def __init__(self) -> None:
        self.start = math.inf
        self.end = math.inf
        self.delays = array("d")

    def record(self, read_at: float) -> None:
        if self.start <= read_at < self.end:
            self.delays.append(time.perf_counter() - read_at)


async def _client(
    side: str, streams: int, port: int, n_deltas: int, timing: dict[str, float]
) -> dict[str, Any]:
    import aiohttp

    if side == MELLEA:
        _instrument_anyio()
    else:
        _instrument_aiohttp()
    loop = asyncio.get_running_loop()
    deltas = _script(n_deltas)
    release = _release_points(deltas)
    url = f"http://127.0.0.1:{port}/v1"
    win = _Window()
    all_reads: list[array[float]] = []
    errors: list[str] = []
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "benchmark"}]}

    async def floor_stream(session: aiohttp.ClientSession, reads: array[float]) -> None:
        k = 0
        async with session.post(f"{url}/chat/completions", json=body) as response:
            async for line in response.content:
                if not line.startswith(b"data: "):
                    continue
                payload = line[6:].strip()
                if payload == b"[DONE]":
                    break
                obj = json.loads(payload)
                content = obj["choices"][0]["delta"].get("content")
                if content:
                    win.record(reads[k])
                    k += 1

    if side == "rxllm":
        from _ours import NoOpRequirement

        from backends import OpenAIBackend
        from engine import CBlock, ChunkEvent, ErrorEvent, SimpleContext, stream_with_chunking

        backend = OpenAIBackend("m", base_url=url, api_key="benchmark")
        requirements = [NoOpRequirement() for _ in range(3)]

        async def rxllm_stream(reads: array[float]) -> None:
            result = await stream_with_chunking(
                CBlock("benchmark"), backend, SimpleContext(), requirements=requirements
            )
            async for event in result.events():
                if type(event) is ChunkEvent and event.chunk_index < len(release):
                    win.record(reads[release[event.chunk_index]])
                elif isinstance(event, ErrorEvent):
                    errors.append(f"{event.exception_type}: {event.detail}")
            await result.acomplete()

    if side == MELLEA:
        from _mellea import NoOpRequirement as MelleaNoOp
        from mellea.backends.openai import OpenAIBackend as MelleaOpenAIBackend
        from mellea.core import CBlock as MelleaCBlock
        from mellea.stdlib.context import SimpleContext as MelleaContext
        from mellea.stdlib.streaming import ChunkEvent as MelleaChunkEvent
        from mellea.stdlib.streaming import stream

        mellea_backend = MelleaOpenAIBackend("m", base_url=url, api_key="benchmark")
        mellea_requirements = [MelleaNoOp() for _ in range(3)]
        expected_chunks = _chunk_texts(deltas)

        async def mellea_stream(reads: array[float]) -> None:
            async with await stream(
                MelleaCBlock("benchmark"),
                mellea_backend,
                MelleaContext(),
                chunking="sentence",
                requirements=mellea_requirements,
                as_events=True,
            ) as events:
                async for event in events:
                    if type(event) is MelleaChunkEvent and event.chunk_index < len(release):
                        if event.text != expected_chunks[event.chunk_index]:  # else misattributed
                            errors.append(f"chunk {event.chunk_index} differs: {event.text!r}")
                        win.record(reads[release[event.chunk_index]])
                if not events.completed_normally and not events.failed_early:
                    errors.append("the stream did not complete")

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def one(start_at: float) -> None:
        await asyncio.sleep(max(0.0, start_at - loop.time()))
        reads: array[float] = array("d")
        all_reads.append(reads)
        _STREAM_READS.set(reads)
        if side == "floor":
            await floor_stream(session, reads)
        elif side == MELLEA:
            await mellea_stream(reads)
        else:
            await rxllm_stream(reads)

    rss_before = _rss_kib()
    t0 = loop.time()
    ramp = timing["ramp"]
    tasks = [loop.create_task(one(t0 + ramp * s / streams)) for s in range(streams)]
    await asyncio.sleep(ramp + timing["warmup"])
    win.start = time.perf_counter()
    cpu0 = time.process_time()
    await asyncio.sleep(timing["window_s"])
    win.end = time.perf_counter()
    cpu = time.process_time() - cpu0
    rss_end = _rss_kib()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    await session.close()
    if side == "rxllm":
        await backend.aclose()
    elif side == MELLEA:
        await mellea_backend.aclose()
    errors += [repr(o) for o in outcomes if isinstance(o, BaseException)]
    # Every frame timed once (the deltas, the finish frame, [DONE]): else delays are misattributed.
    errors += [f"{len(r)} frames timed, {n_deltas + 2} sent" for r in all_reads if len(r) != n_deltas + 2]
    window = win.end - win.start
    reads_in_window = sum(1 for reads in all_reads for t in reads if win.start <= t < win.end)
    return {
        "side": side,
        "streams": streams,
        "delay_p50_ms": percentile(win.delays, 0.5) * 1e3,
        "delay_p99_ms": percentile(win.delays, 0.99) * 1e3,
        "samples": len(win.delays),
        "cpu_us_per_delta": 1e6 * cpu / reads_in_window if reads_in_window else math.nan,
        "delivered_rate": reads_in_window / (streams * window / PERIOD),
        "rss_kib_per_stream": (rss_end - rss_before) / streams,
        "errors": len(errors),
        "first_error": (errors or [None])[0],
    }


def _child_main(spec: dict[str, Any]) -> None:
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # the client on one core
    timing = spec["timing"]
    n_deltas = math.ceil((timing["ramp"] + timing["warmup"] + timing["window_s"]) / PERIOD) + 10
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--server", str(n_deltas)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdin is not None
        port = int(server.stdout.readline())
        coro = _client(spec["side"], spec["streams"], port, n_deltas, timing)
        if spec["loop"] == "uvloop":
            import uvloop

            result = uvloop.run(coro)
        else:
            result = asyncio.run(coro)
        server.stdin.close()
        usage = json.loads(server.stdout.readline())
        result["server_cpu_share"] = usage["cpu_s"] / usage["wall_s"]
    finally:
        server.kill()
        server.wait()
    result["loop"] = spec["loop"]
    if spec["side"] == MELLEA:
        result["versions"] = package_versions()
    print(json.dumps(result))


# -- the parent ---------------------------------------------------------------------------------


def run_child(side: str, streams: int, loop: str, timing: dict[str, float]) -> dict[str, Any]:
    spec = {"side": side, "streams": streams, "loop": loop, "timing": timing}
    span = timing["ramp"] + timing["warmup"] + timing["window_s"]
    python = str(MELLEA_PYTHON) if side == MELLEA else sys.executable
    proc = subprocess.run(
        [python, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=120 + 10 * span,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"http_fanout child {spec} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
        f"  {streams:,} streams, {side}, {loop}: p99 {result['delay_p99_ms']:.2f} ms, "
        f"{result['cpu_us_per_delta']:.1f} µs/delta, {result['errors']} errors",
        file=sys.stderr,
    )
    return result


def _loops() -> list[str]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return ["asyncio"]
    return ["asyncio", "uvloop"]


def plan(quick: bool) -> dict[str, Any]:
    if quick:
        return {"grid": [20], "timing": {"ramp": 0.2, "warmup": 0.2, "window_s": 0.4}}
    return {"grid": [250, 375, 500, 625, 750, 1_000], "timing": {"ramp": 2.0, "warmup": 1.0, "window_s": 5.0}}


def _sides(loop: str) -> list[str]:
    """The sides measured on *loop*: Mellea as it ships (asyncio), when its virtualenv exists."""
    if loop == "asyncio" and MELLEA_PYTHON.exists():
        return list(SIDES)
    return [side for side in SIDES if side != MELLEA]


def main(args: argparse.Namespace) -> None:
    p = plan(args.quick)
    loops = _loops()
    rows: list[dict[str, Any]] = []
    for n in p["grid"]:
        for loop in loops:
            for side in _sides(loop):  # every side at every point, alternating, a fresh process each
                rows.append(run_child(side, n, loop, p["timing"]))
    for row in rows:
        if "versions" in row:
            ENGINE_VERSIONS.setdefault(row["side"], row.pop("versions"))
    largest: dict[str, int] = {}
    rss: dict[str, float] = {}
    for loop in loops:
        for side in _sides(loop):
            mine = [r for r in rows if (r["side"], r["loop"]) == (side, loop)]
            under = [r["streams"] for r in mine if r["delay_p99_ms"] < TARGET_P99_MS and not r["errors"]]
            largest[f"{side}/{loop}"] = max(under, default=0)
            rss[f"{side}/{loop}"] = statistics.median(r["rss_kib_per_stream"] for r in mine)
    targets = []
    for loop in loops:
        floor_n, ours_n = largest[f"floor/{loop}"], largest[f"rxllm/{loop}"]
        floor_rss, ours_rss = rss[f"floor/{loop}"], rss[f"rxllm/{loop}"]
        streams_ratio = ours_n / floor_n if floor_n else math.nan
        rss_ratio = ours_rss / floor_rss if floor_rss else math.nan
        targets.append(
            f"{loop}: rxllm holds {ours_n:,} streams at p99 < 10 ms against the floor's {floor_n:,} "
            f"({streams_ratio:.2f}x; target >= 0.8x: {'met' if streams_ratio >= 0.8 else 'MISSED'}); "
            f"RSS per stream {ours_rss:.1f} KiB against {floor_rss:.1f} KiB (median over N; "
            f"{rss_ratio:.2f}x; target <= 1.3x: {'met' if rss_ratio <= 1.3 else 'MISSED'})."
        )
    notes = [
        f"Server: its own process, one {DELTA_SIZE}-character delta every {PERIOD * 1e3:g} ms per stream "
        "on a fixed schedule (OpenAI SSE). Client: one process per measurement, pinned to one core, "
        f"streams started evenly over {p['timing']['ramp']:g} s, {p['timing']['warmup']:g} s warm-up, "
        f"{p['timing']['window_s']:g} s window. Sides alternate at every N.",
        "Delay: from the protocol receiving a frame's bytes (the socket read: aiohttp's "
        "StreamReader.feed_data; for Mellea's httpx client anyio's data_received) to the consumer "
        "having the delta (floor: parsed; rxllm and Mellea: the ChunkEvent of the chunk it completes).",
        "Largest N with p99 < 10 ms: " + ", ".join(f"{k} {v:,}" for k, v in largest.items()) + ".",
        *targets,
        "Mellea 0.8.0 runs as shipped: its thunk hands deltas on in batches of at least four "
        "(ModelOutputThunk.chunk_size = 3), which alone delays a chunk by up to 60 ms at this pacing."
        if MELLEA_PYTHON.exists()
        else "Mellea 0.8.0: not measured (its virtualenv is missing: `make bench` builds it).",
    ]
    write_result(
        "http_fanout",
        title="HTTP fan-out over loopback SSE: rxllm against the raw aiohttp floor and Mellea 0.8.0",
        columns=COLUMNS,
        rows=rows,
        params={"period_s": PERIOD, "delta_chars": DELTA_SIZE, "requirements": 3, "plan": p, "loops": loops},
        notes=notes,
        quick=args.quick,
        out=args.out if args.out is not None else RESULTS_DIR / "http_fanout.json",
        extra={"largest_streams_under_target": largest, "rss_kib_per_stream_median": rss},
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--server":
        asyncio.run(_serve(int(sys.argv[2])))
    elif len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child_main(json.loads(sys.argv[2]))
    else:
        main(parse_args(__doc__ or ""))
