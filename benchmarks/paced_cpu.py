"""Paced CPU: CPU per delta of the full pipeline against the paced source alone, at a fixed offered load.

Both sides pace N streams with the same code: delta *k* of stream *s* is due at
``t0 + offset_s + k * 20 ms`` (absolute deadlines, phases spread evenly over the
period), and a task sleeps until each deadline. A producer that wakes late does not
slow down the schedule: the next deadline stays where it was, so the offered load is
fixed and a saturated loop shows up as lateness and queueing, not as a lower rate.

- ``floor``: the paced source alone. One task per stream sleeps until each deadline and
  appends the 4-character delta to a list.
- ``pipeline``: ``stream_with_chunking`` (sentence chunking, three no-op requirements,
  every event read from ``events()``) over a backend whose deltas come from that same
  pacing loop, as an async generator read through ``from_async_iterable`` (the bridge
  the shipped backends use).

Measured in a window after a warm-up, per side: CPU µs per delta (``process_time`` /
deltas produced), delivered / offered rate, how late producers ran (deadline →
delta produced, p50/p99), and for the pipeline the delay from the delta that completes
a chunk to the consumer reading its ``ChunkEvent`` (p50/p99); the share of the CPU spent in
the cycle collector (``gc.callbacks``, default GC settings) and how many full collections
ran. Each measurement is a
fresh process; the sides alternate (floor, pipeline, floor, pipeline, ...), and the
ratio pipeline / floor is taken over the medians of the same run.

Run: ``python benchmarks/paced_cpu.py [--quick] [--out PATH]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import statistics
import subprocess
import sys
import time
from array import array
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from _harness import RESULTS_DIR, make_text, parse_args, percentile, split_deltas, write_result

PERIOD = 0.02
DELTA_SIZE = 4
TARGET_RATIO = 1.6
SIDES = ("floor", "pipeline")

COLUMNS = [
    ("streams", "streams"),
    ("side", "side"),
    ("cpu_us_per_delta", "CPU µs/delta (median)"),
    ("cpu_us_per_delta_runs", "CPU µs/delta per run"),
    ("ratio_to_floor", "÷ floor (median of pairs)"),
    ("ratio_runs", "÷ floor per pair"),
    ("delivered_rate", "delivered / offered"),
    ("late_p50_ms", "producer late p50 (ms)"),
    ("late_p99_ms", "producer late p99 (ms)"),
    ("delay_p50_ms", "delta → ChunkEvent p50 (ms)"),
    ("delay_p99_ms", "delta → ChunkEvent p99 (ms)"),
    ("gc_us_per_delta", "of which GC µs/delta"),
    ("gc_full_per_s", "full collections per s"),
]


class _Window:
    def __init__(self) -> None:
        self.start = math.inf
        self.end = math.inf
        self.deltas = 0
        self.late = array("d")
        self.delays = array("d")
        self.gc_total = 0.0
        self.gc_full = 0
        self._gc_started = 0.0

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_started = now
        elif self.start <= self._gc_started < self.end:
            self.gc_total += now - self._gc_started
            self.gc_full += info["generation"] == 2

    def produced(self, due: float, now: float) -> None:
        if self.start <= now < self.end:
            self.deltas += 1
            self.late.append(now - due)


async def paced(
    deltas: list[str], first_due: float, window: _Window, arrived: list[float]
) -> AsyncIterator[str]:
    """The pacing both sides share: delta k at first_due + k * PERIOD (loop clock), never shifted
    later; the ``perf_counter`` at which each delta is handed on goes to *arrived*."""
    loop = asyncio.get_running_loop()
    due = first_due
    for delta in deltas:
        await asyncio.sleep(due - loop.time())
        window.produced(due, loop.time())
        arrived.append(time.perf_counter())
        yield delta
        due += PERIOD


async def _floor_stream(deltas: list[str], first_due: float, window: _Window) -> None:
    received: list[str] = []
    async for delta in paced(deltas, first_due, window, []):
        received.append(delta)


def _release_points(deltas: list[str]) -> list[int]:
    """For each chunk released while streaming, the index of the delta that released it."""
    from operators import Chunker, SentenceChunking

    chunker = Chunker(SentenceChunking())
    points: list[int] = []
    for i, delta in enumerate(deltas):
        points.extend(i for _ in chunker.feed(delta))
    return points


async def _child(side: str, streams: int, warmup: float, window_s: float) -> dict[str, Any]:
    from _ours import NoOpRequirement

    from engine import (
        CBlock,
        ChunkEvent,
        GenerationInfo,
        ModelOutputThunk,
        SimpleContext,
        stream_with_chunking,
    )
    from engine.core.asyncrx import from_async_iterable

    loop = asyncio.get_running_loop()
    n_deltas = math.ceil((PERIOD + warmup + window_s) / PERIOD) + 5
    deltas = split_deltas(make_text(n_deltas * DELTA_SIZE, seed=7), DELTA_SIZE)
    release = _release_points(deltas)
    requirements = [NoOpRequirement() for _ in range(3)]
    win = _Window()
    t0 = loop.time() + 0.05

    class PacedBackend:
        """A backend whose one generation is the shared pacing loop (one per stream)."""

        def __init__(self, first_due: float) -> None:
            self.first_due = first_due
            self.arrived: list[float] = []

        def _produce(self) -> AsyncIterator[str]:
            # The pacing generator itself, as a backend's one producer: no extra layer.
            return paced(deltas, self.first_due, win, self.arrived)

        async def generate_from_context(self, action: Any, ctx: Any, **kwargs: Any) -> Any:
            thunk: Any = ModelOutputThunk(from_async_iterable(self._produce), generation=GenerationInfo())
            return thunk, ctx.add(action).add(thunk)

    async def pipeline_stream(first_due: float) -> None:
        backend = PacedBackend(first_due)
        result = await stream_with_chunking(
            CBlock("benchmark"), backend, SimpleContext(), requirements=requirements
        )
        async for event in result.events():
            if type(event) is ChunkEvent and event.chunk_index < len(release):
                produced = backend.arrived[release[event.chunk_index]]
                if win.start <= produced < win.end:
                    win.delays.append(time.perf_counter() - produced)
        await result.acomplete()

    offsets = [PERIOD * s / streams for s in range(streams)]
    gc.callbacks.append(win.on_gc)
    if side == "floor":
        tasks = [loop.create_task(_floor_stream(deltas, t0 + o, win)) for o in offsets]
    else:
        tasks = [loop.create_task(pipeline_stream(t0 + o)) for o in offsets]
    await asyncio.sleep(0.05 + warmup)
    win.start = time.perf_counter()
    cpu_start = time.process_time()
    await asyncio.sleep(window_s)
    win.end = time.perf_counter()
    cpu = time.process_time() - cpu_start
    window = win.end - win.start
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    gc.callbacks.remove(win.on_gc)
    errors = [repr(o) for o in outcomes if isinstance(o, BaseException)]
    return {
        "side": side,
        "streams": streams,
        "cpu_us_per_delta": 1e6 * cpu / win.deltas if win.deltas else math.nan,
        "delivered_rate": win.deltas / (streams * window / PERIOD),
        "late_p50_ms": percentile(win.late, 0.5) * 1e3,
        "late_p99_ms": percentile(win.late, 0.99) * 1e3,
        "delay_p50_ms": percentile(win.delays, 0.5) * 1e3 if win.delays else math.nan,
        "delay_p99_ms": percentile(win.delays, 0.99) * 1e3 if win.delays else math.nan,
        "gc_us_per_delta": 1e6 * win.gc_total / win.deltas if win.deltas else math.nan,
        "gc_full_per_s": win.gc_full / window,
        "errors": len(errors),
        "first_error": (errors or [None])[0],
    }


def run_child(side: str, streams: int, timing: dict[str, float]) -> dict[str, Any]:
    spec = json.dumps({"side": side, "streams": streams} | timing)
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", spec],
        capture_output=True,
        text=True,
        timeout=120 + 10 * (timing["warmup"] + timing["window_s"]),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"paced_cpu child ({side}, {streams}) failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["errors"]:
        raise RuntimeError(f"paced_cpu child ({side}, {streams}) had errors: {result['first_error']}")
    return result


def plan(quick: bool) -> dict[str, Any]:
    if quick:
        return {"streams": [20], "repeats": 1, "timing": {"warmup": 0.1, "window_s": 0.3}}
    return {"streams": [250, 1_000, 2_000], "repeats": 5, "timing": {"warmup": 1.0, "window_s": 4.0}}


def main(args: argparse.Namespace) -> None:
    p = plan(args.quick)
    rows: list[dict[str, Any]] = []
    for n in p["streams"]:
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
        for _ in range(p["repeats"]):
            for side in SIDES:  # alternating: floor, pipeline, floor, pipeline, ...
                runs[side].append(run_child(side, n, p["timing"]))
        medians = {side: statistics.median(r["cpu_us_per_delta"] for r in runs[side]) for side in SIDES}
        # Each pipeline run against the floor run just before it (the machine is shared: the
        # two runs of a pair saw the most similar load), then the median of those ratios.
        pairs = [
            p_run["cpu_us_per_delta"] / f_run["cpu_us_per_delta"]
            for f_run, p_run in zip(runs["floor"], runs["pipeline"], strict=True)
        ]
        for side in SIDES:
            # The run whose CPU figure is the median carries the side's latency figures.
            ordered = sorted(runs[side], key=lambda r: r["cpu_us_per_delta"])
            row = dict(ordered[len(ordered) // 2])
            row["cpu_us_per_delta"] = medians[side]
            row["cpu_us_per_delta_runs"] = " / ".join(f"{r['cpu_us_per_delta']:.1f}" for r in runs[side])
            row["ratio_to_floor"] = statistics.median(pairs) if side == "pipeline" else 1.0
            row["ratio_runs"] = " / ".join(f"{r:.2f}" for r in pairs) if side == "pipeline" else ""
            rows.append(row)
            print(f"  {n:,} streams, {side}: {medians[side]:.1f} µs/delta", file=sys.stderr)
    worst = max(r["ratio_to_floor"] for r in rows if r["side"] == "pipeline")
    notes = [
        f"Offered load fixed: delta k of stream s due at t0 + s·{PERIOD * 1e3:g} ms/N "
        f"+ k·{PERIOD * 1e3:g} ms "
        "(absolute deadlines; a late producer does not shift later deadlines). Both sides pace with the "
        "same async generator; the floor appends each delta to a list, the pipeline runs "
        "stream_with_chunking (sentence chunking, 3 no-op requirements, every event read).",
        f"One fresh process per measurement, sides alternating, {p['repeats']} per side; ÷ floor: the "
        "median over the pairs (each pipeline run against the floor run just before it). "
        f"{p['timing']['warmup']:g} s warm-up, {p['timing']['window_s']:g} s window. "
        "CPU µs/delta: process_time over the window / deltas produced in it.",
        f"Largest pipeline / floor CPU ratio: {worst:.2f} (target ≤ {TARGET_RATIO:g}: "
        f"{'met' if worst <= TARGET_RATIO else 'missed'}).",
    ]
    write_result(
        "paced_cpu",
        title="Paced CPU per delta: pipeline against the paced source alone (fixed offered load)",
        columns=COLUMNS,
        rows=rows,
        params={"period_s": PERIOD, "delta_chars": DELTA_SIZE, "requirements": 3, "plan": p},
        notes=notes,
        quick=args.quick,
        out=args.out if args.out is not None else RESULTS_DIR / "paced_cpu.json",
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        o = json.loads(sys.argv[2])
        print(json.dumps(asyncio.run(_child(o["side"], o["streams"], o["warmup"], o["window_s"]))))
    else:
        main(parse_args(__doc__ or ""))
