"""Deterministic profile of the HTTP streaming path: calls and memory per streamed delta, counted.

Runs *N* streams of ``http_fanout.py``'s loopback SSE server (its own process, a
4-character delta every 20 ms) to their end, on three sides:

- ``floor``: the raw aiohttp client of ``http_fanout.py`` (SSE lines and JSON parsed, no
  validation);
- ``rxllm``: ``OpenAIBackend`` + ``stream_with_chunking`` (sentence chunking, three no-op
  requirements, every event read);
- ``scripted``: the same pipeline fed by the in-process ``ScriptedBackend`` at the same
  pacing: what the engine keeps and calls without HTTP.

Counted per delta: Python function calls (``sys.setprofile``), split by file (what the
rxllm side calls in ``backends/`` and in aiohttp beyond the floor). Per stream, halfway
through the streams: the traced heap (``tracemalloc``, snapshot minus the one before the
streams, grouped by the innermost frame in this project or aiohttp) and the objects the
cycle collector tracks, by type. ``rxllm - scripted`` is what the HTTP side keeps;
against ``floor`` it shows what the backend keeps beyond a bare aiohttp request.

Run: ``python benchmarks/profile_http.py [--streams N] [--top K]``
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import http_fanout

N_DELTAS = 100
SIDES = ("floor", "rxllm", "scripted")
_BODY = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "benchmark"}]}


class _Server:
    """``http_fanout.py``'s SSE server in its own process (its calls are not counted here)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(http_fanout.__file__).resolve()), "--server", str(N_DELTAS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}/v1"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


async def _floor_stream(session: Any, url: str, count: list[int]) -> None:
    # The floor of http_fanout.py, counting deltas instead of timing them.
    async with session.post(f"{url}/chat/completions", json=_BODY) as response:
        async for line in response.content:
            if not line.startswith(b"data: "):
                continue
            payload = line[6:].strip()
            if payload == b"[DONE]":
                break
            obj = json.loads(payload)
            if obj["choices"][0]["delta"].get("content"):
                count[0] += 1


async def _run(side: str, streams: int, url: str, halfway: Callable[[], None] | None = None) -> int:
    """Run *streams* streams of *side* to their end; call *halfway* at delta N_DELTAS / 2."""
    import aiohttp
    from _ours import NoOpRequirement

    from backends import OpenAIBackend, ScriptedBackend
    from engine import CBlock, ChunkEvent, SimpleContext, stream_with_chunking

    loop = asyncio.get_running_loop()
    count = [0]
    requirements = [NoOpRequirement() for _ in range(3)]
    backend: Any = None
    session: Any = None
    if side == "floor":
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    elif side == "rxllm":
        backend = OpenAIBackend("m", base_url=url, api_key="benchmark")
    else:
        backend = ScriptedBackend(http_fanout._script(N_DELTAS), delay=http_fanout.PERIOD)

    async def pipeline_stream() -> None:
        result = await stream_with_chunking(
            CBlock("benchmark"), backend, SimpleContext(), requirements=requirements
        )
        async for event in result.events():
            if type(event) is ChunkEvent:
                pass
        await result.acomplete()
        count[0] += result.mot.generation.deltas_received

    t0 = loop.time()
    if side == "floor":
        runs = asyncio.gather(*(_floor_stream(session, url, count) for _ in range(streams)))
    else:
        runs = asyncio.gather(*(pipeline_stream() for _ in range(streams)))
    try:
        if halfway is not None:
            await asyncio.sleep(t0 + http_fanout.PERIOD * (N_DELTAS // 2 + 0.5) - loop.time())
            halfway()
        await runs
    finally:
        if session is not None:
            await session.close()
        if side == "rxllm":
            await backend.aclose()
    return count[0]


def _key(filename: str) -> str:
    parts = filename.replace("\\", "/").split("/")
    if "site-packages" in parts:
        return "/".join(parts[parts.index("site-packages") + 1 :][:2])
    return "/".join(parts[-2:])


class _Calls:
    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()

    def profiler(self, frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            code = frame.f_code
            self.calls[f"{_key(code.co_filename)}:{code.co_name}"] += 1


def _count_calls(side: str, streams: int, url: str) -> tuple[int, _Calls]:
    calls = _Calls()
    loop = asyncio.new_event_loop()
    try:
        sys.setprofile(calls.profiler)
        produced = loop.run_until_complete(_run(side, streams, url))
    finally:
        sys.setprofile(None)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return produced, calls


_SITES = ("backends/", "engine/", "operators/", "aiohttp/", "yarl/", "multidict/", "asyncio/", "reactivex/")


def _site(traceback: tracemalloc.Traceback) -> str:
    """The innermost frame of an allocation in this project, aiohttp or asyncio."""
    for frame in reversed(traceback):  # oldest first: walk from the allocation outwards
        key = _key(frame.filename)
        if key.startswith(_SITES) or any(f"/{site}" in frame.filename for site in _SITES[:3]):
            return f"{key}:{frame.lineno}"
    return _key(traceback[-1].filename) + f":{traceback[-1].lineno}"


def _census(
    side: str, streams: int, url: str
) -> tuple[float, collections.Counter[str], collections.Counter[str]]:
    """Traced bytes and gc-tracked objects per stream halfway through, by site and by type."""
    taken: dict[str, Any] = {}

    def halfway() -> None:
        gc.collect()
        taken["snapshot"] = tracemalloc.take_snapshot()
        taken["types"] = collections.Counter(type(o).__qualname__ for o in gc.get_objects())

    gc.collect()
    types_before = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    tracemalloc.start(30)
    before = tracemalloc.take_snapshot()
    try:
        asyncio.run(_run(side, streams, url, halfway=halfway))
    finally:
        tracemalloc.stop()
    by_site: collections.Counter[str] = collections.Counter()
    total = 0
    for stat in taken["snapshot"].compare_to(before, "traceback"):
        if stat.size_diff:
            by_site[_site(stat.traceback)] += stat.size_diff
            total += stat.size_diff
    types = taken["types"]
    types.subtract(types_before)
    return total / streams, by_site, types


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--sides", default=",".join(SIDES))
    args = parser.parse_args()
    sides = args.sides.split(",")
    server = _Server()
    try:
        for side in sides:  # imports and first-call caches outside the counts
            asyncio.run(_run(side, 2, server.url))
        per_side = {side: _count_calls(side, args.streams, server.url) for side in sides}
        print(f"{args.streams} streams x {N_DELTAS} deltas\n")
        print(
            "Python calls per delta: "
            + ", ".join(f"{s} {c.calls.total() / n:.2f}" for s, (n, c) in per_side.items())
        )
        for side, (produced, calls) in per_side.items():
            by_file: collections.Counter[str] = collections.Counter()
            for key, value in calls.calls.items():
                by_file[key.split(":")[0]] += value
            print(f"\n{side}: Python calls per delta by file")
            for key, value in by_file.most_common(args.top):
                print(f"  {value / produced:7.2f}  {key}")
            if side == "rxllm":
                print("\nrxllm: calls per delta in backends/, aiohttp/ and yarl/")
                for key, value in calls.calls.most_common():
                    if (
                        key.startswith(("backends/", "aiohttp/", "yarl/", "multidict/"))
                        and value >= produced / 50
                    ):
                        print(f"  {value / produced:7.2f}  {key}")
        census = {side: _census(side, args.streams, server.url) for side in sides}
        print()
        for side, (per_stream, _, _) in census.items():
            print(f"traced bytes per stream halfway ({side}): {per_stream:,.0f}")
        for side, (_, by_site, types) in census.items():
            print(f"\n{side}: traced bytes per stream by site (top {args.top})")
            for site, size in by_site.most_common(args.top):
                print(f"  {size / args.streams:9,.0f}  {site}")
            print(f"{side}: gc-tracked objects per stream by type: {types.total() / args.streams:.1f}")
            for name, n in types.most_common(args.top):
                if n >= args.streams / 2:
                    print(f"  {n / args.streams:7.2f}  {name}")
    finally:
        server.close()


if __name__ == "__main__":
    main()
