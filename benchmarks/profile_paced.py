"""Deterministic profile of the paced path: what one paced delta costs, counted, not timed.

Runs *N* paced streams of ``paced_cpu.py`` (floor, then pipeline) to their end and counts,
per delta produced: Python function calls (``sys.setprofile``: Python frames, generator
resumes included, and C calls), event-loop handles scheduled (``call_soon`` / ``call_at``,
split into task steps and other callbacks), the traced heap's peak (``tracemalloc``,
over a separate run), and the objects the cycle collector tracks per stream halfway
through the streams (``gc.get_objects()``, over another run). The difference pipeline - floor
is what the pipeline adds.
``--top K`` lists the K functions called most per delta on the pipeline side.

Run: ``python benchmarks/profile_paced.py [--streams N] [--top K]``
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import math
import sys
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import paced_cpu
from _harness import make_text, split_deltas

N_DELTAS = 200


def _deltas() -> list[str]:
    return split_deltas(make_text(N_DELTAS * paced_cpu.DELTA_SIZE, seed=7), paced_cpu.DELTA_SIZE)


async def _run(side: str, streams: int, halfway: Any = None) -> int:
    from _ours import NoOpRequirement

    from engine import CBlock, GenerationInfo, ModelOutputThunk, SimpleContext, stream_with_chunking
    from engine.core.asyncrx import from_async_iterable

    loop = asyncio.get_running_loop()
    deltas = _deltas()
    win = paced_cpu._Window()
    win.start, win.end = -math.inf, math.inf
    requirements = [NoOpRequirement() for _ in range(3)]
    t0 = loop.time() + 0.01

    class PacedBackend:
        def __init__(self, first_due: float) -> None:
            self.first_due = first_due

        async def generate_from_context(self, action: Any, ctx: Any, **kwargs: Any) -> Any:
            def produce() -> AsyncIterator[str]:
                return paced_cpu.paced(deltas, self.first_due, win, [])

            thunk: Any = ModelOutputThunk(from_async_iterable(produce), generation=GenerationInfo())
            return thunk, ctx.add(action).add(thunk)

    async def pipeline_stream(first_due: float) -> None:
        result = await stream_with_chunking(
            CBlock("p"), PacedBackend(first_due), SimpleContext(), requirements=requirements
        )
        async for _event in result.events():
            pass
        await result.acomplete()

    offsets = [paced_cpu.PERIOD * s / streams for s in range(streams)]
    if side == "floor":
        runs = asyncio.gather(*(paced_cpu._floor_stream(deltas, t0 + o, win) for o in offsets))
    else:
        runs = asyncio.gather(*(pipeline_stream(t0 + o) for o in offsets))
    if halfway is not None:
        await asyncio.sleep(t0 + paced_cpu.PERIOD * (N_DELTAS // 2 + 0.5) - loop.time())
        halfway()
    await runs
    return win.deltas


class _Counts:
    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.handles: collections.Counter[str] = collections.Counter()

    def profiler(self, frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            code = frame.f_code
            self.calls[f"{'/'.join(code.co_filename.rsplit('/', 2)[-2:])}:{code.co_name}"] += 1
        elif event == "c_call":
            self.calls[f"C:{getattr(arg, '__qualname__', arg)}"] += 1


def _instrumented(side: str, streams: int, counts: _Counts) -> int:
    loop = asyncio.new_event_loop()
    call_soon, call_at = loop.call_soon, loop.call_at

    def name(callback: Any) -> str:
        owner = getattr(callback, "__self__", None)
        if isinstance(owner, asyncio.Task):
            return "task step"
        return getattr(callback, "__qualname__", repr(callback))

    def counted_call_soon(callback: Any, *args: Any, context: Any = None) -> Any:
        counts.handles[f"call_soon {name(callback)}"] += 1
        return call_soon(callback, *args, context=context)

    def counted_call_at(when: float, callback: Any, *args: Any, context: Any = None) -> Any:
        counts.handles[f"call_at {name(callback)}"] += 1
        return call_at(when, callback, *args, context=context)

    loop.call_soon = counted_call_soon  # type: ignore[method-assign]
    loop.call_at = counted_call_at  # type: ignore[method-assign]
    try:
        sys.setprofile(counts.profiler)
        produced = loop.run_until_complete(_run(side, streams))
    finally:
        sys.setprofile(None)
        loop.close()
    return produced


def _allocations(side: str, streams: int) -> tuple[int, int]:
    """(deltas produced, the traced heap's peak in bytes) over one untimed run of *side*."""
    tracemalloc.start()
    produced = asyncio.run(_run(side, streams))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return produced, peak


def _chunks_per_stream() -> int:
    from operators import Chunker, SentenceChunking

    chunker = Chunker(SentenceChunking())
    return sum(len(chunker.feed(d)) for d in _deltas()) + len(chunker.flush())


def _tracked_objects(side: str, streams: int) -> float:
    """Objects the cycle collector tracks per stream, halfway through the streams (delta 100)."""
    counts: list[int] = []

    def count() -> None:
        gc.collect()
        counts.append(len(gc.get_objects()))

    gc.collect()
    before = len(gc.get_objects())
    asyncio.run(_run(side, streams, halfway=count))
    return (counts[0] - before) / streams


_RXLLM_DIRS = ("engine/", "core/", "operators/", "chunking/", "validation/", "backends/")


def _ours_code(key: str) -> bool:
    """A call counted in a module of the engine, its operators or its backends."""
    return key.startswith(_RXLLM_DIRS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(_run("pipeline", 2))  # imports and first-call caches outside the counts
    per_side: dict[str, tuple[int, _Counts]] = {}
    for side in paced_cpu.SIDES:
        counts = _Counts()
        produced = _instrumented(side, args.streams, counts)
        per_side[side] = (produced, counts)
    print(f"{args.streams} streams x {N_DELTAS} deltas, counts per delta produced\n")
    print("| measure | floor | pipeline | added |\n|---|---|---|---|")
    for label, pick in (
        ("Python calls (frames)", lambda c: sum(v for k, v in c.calls.items() if not k.startswith("C:"))),
        ("C calls", lambda c: sum(v for k, v in c.calls.items() if k.startswith("C:"))),
        ("Python calls in rxllm's code", lambda c: sum(v for k, v in c.calls.items() if _ours_code(k))),
        ("loop handles", lambda c: sum(c.handles.values())),
        ("task steps", lambda c: sum(v for k, v in c.handles.items() if k.endswith("task step"))),
        ("timer handles", lambda c: sum(v for k, v in c.handles.items() if k.startswith("call_at"))),
    ):
        f = pick(per_side["floor"][1]) / per_side["floor"][0]
        p = pick(per_side["pipeline"][1]) / per_side["pipeline"][0]
        print(f"| {label} | {f:.2f} | {p:.2f} | {p - f:.2f} |")
    produced, counts = per_side["pipeline"]
    chunks = _chunks_per_stream() * args.streams
    ours = {k: v for k, v in counts.calls.items() if _ours_code(k)}
    # The per-delta path: functions of ours that run on every delta; the rest runs per chunk
    # (and a few times per stream, which a 200-delta stream spreads over its chunks).
    every_delta = sum(v for v in ours.values() if v >= produced)
    print(
        f"\nPython calls in rxllm's code: {every_delta / produced:.2f} a delta on the per-delta path, "
        f"{(sum(ours.values()) - every_delta) / chunks:.1f} a chunk for the rest "
        f"({chunks / produced:.3f} chunks a delta)"
    )
    print("\nloop handles per delta (pipeline):")
    for key, value in counts.handles.most_common():
        print(f"  {value / produced:6.2f}  {key}")
    print("\nPython calls per delta by file (pipeline - floor):")
    by_file: collections.Counter[str] = collections.Counter()
    for side, sign in (("pipeline", 1), ("floor", -1)):
        produced_side, side_counts = per_side[side]
        for key, value in side_counts.calls.items():
            if not key.startswith("C:") and "profile_paced" not in key:
                by_file[key.split(":")[0]] += sign * value / produced_side
    for key, value in sorted(by_file.items(), key=lambda kv: -abs(kv[1])):
        if abs(value) >= 0.05:
            print(f"  {value:6.2f}  {key}")
    print(f"\ntop {args.top} calls per delta (pipeline):")
    for key, value in counts.calls.most_common(args.top):
        print(f"  {value / produced:6.2f}  {key}")
    for side in paced_cpu.SIDES:
        produced, peak = _allocations(side, args.streams)
        print(f"traced peak per stream ({side}): {peak / args.streams / 1024:.1f} KiB")
    for side in paced_cpu.SIDES:
        objects = _tracked_objects(side, args.streams)
        print(f"gc-tracked objects per stream at delta {N_DELTAS // 2} ({side}): {objects:.1f}")


if __name__ == "__main__":
    main()
