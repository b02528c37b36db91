"""Paced fan-out: N streams paced like real models on one process, delay from delta to ChunkEvent.

Each of N streams is a full ``stream_with_chunking`` run (sentence chunking, three
no-op requirements, every event read from ``events()``) whose source produces one
4-character delta every 20 ms (50 tokens/s). Streams start at random moments spread
over a ramp, so their phases within the 20 ms period are random. After the ramp and
one more second of warm-up, a measurement window of several seconds records:

- delay from a delta produced to its chunk's ``ChunkEvent`` at the consumer: for each
  chunk, the delta whose arrival released it (found by running our ``Chunker`` over the
  script beforehand); "produced" is the ``perf_counter`` at which the thunk received it
  (a subscriber to ``thunk.deltas`` attached before the pipeline's, so it runs in the
  producer's own step). p50 and p99 over every chunk released in the window.
- event-loop lag: a task sleeping 1 ms in a loop; lag = how late it wakes. p99.
- CPU µs per delta: ``time.process_time()`` over the window / deltas produced in it.
- garbage collection: time and longest pause, from ``gc.callbacks``.
- memory per stream: RSS at the end of the window minus RSS before the streams, / N;
  and the traced Python heap (``tracemalloc``, current at the end of the window) / N,
  from a separate run (tracing slows everything, so its figures are not timed; tracing
  stops at the end of its window).
- errors: streams that raised, emitted an ``ErrorEvent`` or did not complete.

Sources (``--source``): ``scripted`` is ``ScriptedBackend(delay=0.02)`` (one
``asyncio.sleep`` per delta per stream: the sleeps drift later under load, so the
delivered rate is reported); ``wheel`` is a backend of this script whose streams are
all paced by one shared 1 ms ticker (a timer wheel of 20 slots, at absolute times, no
drift; built on the public ``ModelOutputThunk(source)``). The full run sweeps N with
the scripted source and runs the wheel at a few N to show how much the per-stream
sleeps cost. It also measures process GC settings a server could choose (the library
never changes them): ``gc.freeze()`` after warm-up, and a gen-0 threshold of 10,000.

Every measurement runs in a fresh child process (``--child``), so its memory and GC
history are its own. Run: ``python benchmarks/fanout_paced.py [--quick] [--out PATH]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import random
import subprocess
import sys
import time
import tracemalloc
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _harness import RESULTS_DIR, make_text, parse_args, percentile, split_deltas, write_result

PERIOD = 0.02
DELTA_SIZE = 4
TARGET_P99_MS = 10.0
TARGET_STREAMS = 2_000
TARGET_KIB_PER_STREAM = 20.0
GEN0_THRESHOLD = 10_000

COLUMNS = [
    ("streams", "streams"),
    ("source", "source"),
    ("gc_setting", "GC setting"),
    ("delay_p50_ms", "delta → ChunkEvent p50 (ms)"),
    ("delay_p99_ms", "p99 (ms)"),
    ("lag_p99_ms", "loop lag p99 (ms)"),
    ("cpu_us_per_delta", "CPU µs/delta"),
    ("delivered_rate", "delivered / nominal rate"),
    ("gc_ms_per_s", "GC ms per s"),
    ("gc_max_pause_ms", "longest GC pause (ms)"),
    ("rss_kib_per_stream", "RSS KiB/stream"),
    ("traced_kib_per_stream", "traced KiB/stream"),
    ("errors", "errors"),
]


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


# -- the child: one measurement ---------------------------------------------------------------


class _Window:
    """Shared state of one child run: the window's bounds and what was recorded inside it."""

    def __init__(self) -> None:
        self.start = math.inf
        self.end = math.inf
        self.deltas = 0
        self.all_deltas = 0  # every delta produced, in the window or not: the streams' progress
        # Samples as C doubles: the benchmark's own memory stays small beside the streams'.
        self.delays = array("d")
        self.lags = array("d")
        self.gc_total = 0.0
        self.gc_max = 0.0
        self.gc_count = 0
        self._gc_started = 0.0

    def inside(self, t: float) -> bool:
        return self.start <= t < self.end

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_started = now
        elif self.inside(self._gc_started):
            pause = now - self._gc_started
            self.gc_total += pause
            self.gc_max = max(self.gc_max, pause)
            self.gc_count += 1


def _release_points(deltas: list[str]) -> list[int]:
    """For each chunk released while streaming, the index of the delta that released it."""
    from operators import Chunker, SentenceChunking

    chunker = Chunker(SentenceChunking())
    points: list[int] = []
    for i, delta in enumerate(deltas):
        points.extend(i for _ in chunker.feed(delta))
    return points


class _Wheel:
    """One 1 ms ticker pacing every stream: slot *k* of 20 emits the next delta of its streams."""

    SLOTS = 20

    def __init__(self) -> None:
        self.slots: list[set[Any]] = [set() for _ in range(self.SLOTS)]
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _tick(self) -> None:
        step = PERIOD / self.SLOTS
        due = time.perf_counter()
        tick = 0
        while True:
            due += step
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            for stream in list(self.slots[tick % self.SLOTS]):
                stream.emit()
            tick += 1


def _wheel_backend_factory(wheel: _Wheel, deltas: list[str]) -> Callable[[], Any]:
    """Makes backends whose generations are paced by *wheel* (public names only)."""
    import reactivex
    from reactivex.disposable import Disposable

    from engine import GenerationInfo, ModelOutputThunk

    class _Stream:
        def __init__(self, observer: Any, slot: set[Any]) -> None:
            self.observer = observer
            self.slot = slot
            self.sent = 0

        def emit(self) -> None:
            if self.sent < len(deltas):
                self.sent += 1
                self.observer.on_next(deltas[self.sent - 1])
            else:
                self.slot.discard(self)
                self.observer.on_completed()

    class WheelBackend:
        async def generate_from_context(
            self, action: Any, ctx: Any, *, format: Any = None, model_options: Any = None
        ) -> Any:
            slot = wheel.slots[random.randrange(_Wheel.SLOTS)]

            def subscribe(observer: Any, scheduler: Any = None) -> Any:
                stream = _Stream(observer, slot)
                slot.add(stream)
                return Disposable(lambda: slot.discard(stream))

            thunk: Any = ModelOutputThunk(
                reactivex.create(subscribe), generation=GenerationInfo(model="wheel")
            )
            return thunk, ctx.add(action).add(thunk)

    return WheelBackend


async def _child(
    streams: int, source: str, gc_setting: str, trace: bool, ramp: float, warmup: float, window_s: float
) -> dict[str, Any]:
    from _ours import NoOpRequirement

    from backends import ScriptedBackend
    from engine import CBlock, ChunkEvent, CompletedEvent, ErrorEvent, SimpleContext, stream_with_chunking

    if gc_setting == "gen0":
        gc.set_threshold(GEN0_THRESHOLD, *gc.get_threshold()[1:])
    n_deltas = math.ceil((ramp + warmup + window_s) / PERIOD) + 10
    deltas = split_deltas(make_text(n_deltas * DELTA_SIZE, seed=7), DELTA_SIZE)
    release = _release_points(deltas)
    requirements = [NoOpRequirement() for _ in range(3)]
    win = _Window()
    rng = random.Random(1)
    wheel = _Wheel()
    loop = asyncio.get_running_loop()
    errors: list[str] = []

    # One backend serves every stream (as one server connection pool would); each stream reaches
    # it through a small tap that subscribes to its thunk's deltas before the pipeline does.
    shared: Any = (
        _wheel_backend_factory(wheel, deltas)()
        if source == "wheel"
        else ScriptedBackend(deltas, delay=PERIOD)
    )
    release_at = set(release)

    class Tap:
        def __init__(self) -> None:
            self.received = 0
            self.arrived: dict[int, float] = {}  # delta index -> arrival, for the deltas releasing chunks

        def on_delta(self, _delta: str) -> None:
            now = time.perf_counter()
            if self.received in release_at:
                self.arrived[self.received] = now
            self.received += 1
            win.all_deltas += 1
            if win.start <= now < win.end:
                win.deltas += 1

        async def generate_from_context(self, action: Any, ctx: Any, **kwargs: Any) -> Any:
            thunk, new_ctx = await shared.generate_from_context(action, ctx, **kwargs)
            thunk.deltas.subscribe(self.on_delta)  # before the pipeline's subscription: runs first
            return thunk, new_ctx

    async def one_stream(start_at: float) -> bool:
        await asyncio.sleep(max(0.0, start_at - loop.time()))
        backend = Tap()
        result = await stream_with_chunking(
            CBlock("benchmark"), backend, SimpleContext(), requirements=requirements
        )
        completed = False
        async for event in result.events():
            if type(event) is ChunkEvent:
                index = event.chunk_index
                if index < len(release):
                    produced = backend.arrived.pop(release[index])
                    if win.start <= produced < win.end:
                        win.delays.append(time.perf_counter() - produced)
            elif isinstance(event, ErrorEvent):
                errors.append(f"{event.exception_type}: {event.detail}")
            elif isinstance(event, CompletedEvent):
                completed = event.success
        await result.acomplete()
        return completed

    async def ticker() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            if win.start <= before < win.end:
                win.lags.append(now - before - 0.001)

    gc.callbacks.append(win.on_gc)
    gc.collect()
    rss_before = _rss_kib()
    if trace:
        tracemalloc.start()
    if source == "wheel":
        wheel.start()
    tick_task = loop.create_task(ticker())
    t0 = loop.time()
    tasks = [loop.create_task(one_stream(t0 + rng.uniform(0, ramp))) for _ in range(streams)]
    await asyncio.sleep(ramp + warmup)
    if gc_setting == "freeze":
        gc.freeze()
    win.start = time.perf_counter()
    cpu_start = time.process_time()
    await asyncio.sleep(window_s)
    win.end = time.perf_counter()
    cpu = time.process_time() - cpu_start
    rss_end = _rss_kib()
    traced = tracemalloc.get_traced_memory()[0] if trace else 0
    if trace:
        tracemalloc.stop()
    # Every stream runs to its end, later than nominal when the loop is saturated (10,000
    # streams ask for 10x what one core delivers): the wait lasts while the streams make
    # progress; streams that produce nothing for a whole stall period are cancelled and
    # counted as unfinished.
    pending = set(tasks)
    stall = max(30.0, 2 * (ramp + warmup + window_s))
    while pending:
        before = win.all_deltas
        _, pending = await asyncio.wait(pending, timeout=stall)
        if pending and win.all_deltas == before:
            break
    for task in pending:
        task.cancel()
    outcomes: list[Any] = list(await asyncio.gather(*tasks, return_exceptions=True))
    tick_task.cancel()
    await asyncio.gather(tick_task, return_exceptions=True)
    await wheel.stop()
    gc.callbacks.remove(win.on_gc)
    raised = [repr(o) for o in outcomes if isinstance(o, BaseException)]
    incomplete = sum(1 for o in outcomes if o is False)
    window = win.end - win.start
    return {
        "streams": streams,
        "source": source,
        "gc_setting": gc_setting,
        "traced": trace,
        "window_s": window,
        "deltas_in_window": win.deltas,
        "chunks_in_window": len(win.delays),
        "delay_p50_ms": percentile(win.delays, 0.5) * 1e3,
        "delay_p99_ms": percentile(win.delays, 0.99) * 1e3,
        "delay_max_ms": max(win.delays, default=math.nan) * 1e3,
        "lag_p99_ms": percentile(win.lags, 0.99) * 1e3,
        "lag_max_ms": max(win.lags, default=math.nan) * 1e3,
        "cpu_us_per_delta": 1e6 * cpu / win.deltas if win.deltas else math.nan,
        "cpu_share": cpu / window,
        "delivered_rate": win.deltas / (streams * window / PERIOD),
        "gc_ms_per_s": 1e3 * win.gc_total / window,
        "gc_max_pause_ms": 1e3 * win.gc_max,
        "gc_collections": win.gc_count,
        "rss_kib_per_stream": (rss_end - rss_before) / streams,
        "traced_kib_per_stream": traced / 1024 / streams if trace else math.nan,
        "errors": len(raised) + len(errors) + incomplete,
        "unfinished": len(pending),
        "first_error": (raised or errors or [None])[0],
    }


# -- the parent: the plan, children, the table ------------------------------------------------


def run_child(
    streams: int,
    *,
    source: str = "scripted",
    gc_setting: str = "default",
    trace: bool = False,
    timing: dict[str, float],
) -> dict[str, Any]:
    """One measurement in a fresh interpreter; its JSON line."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        json.dumps({"streams": streams, "source": source, "gc_setting": gc_setting, "trace": trace} | timing),
    ]
    span = timing["ramp"] + timing["warmup"] + timing["window_s"]
    # A saturated loop finishes the streams late: allow 50 µs of CPU per delta on top.
    limit = 120 + 20 * span + streams * (span / PERIOD) * 50e-6
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    hung = False
    try:
        stdout, stderr = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        # The child printed its figures but did not exit: tasks left behind by the runs kept
        # asyncio.run from returning. Keep the figures, say so.
        proc.kill()
        stdout, stderr = proc.communicate()
        hung = True
    lines = stdout.strip().splitlines()
    if not lines or (proc.returncode != 0 and not hung):
        raise RuntimeError(f"paced fan-out child {cmd} failed with exit code {proc.returncode}:\n{stderr}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["exit_hung"] = hung
    if hung:
        print(
            f"warning: the child for {streams:,} streams did not exit within {limit:.0f} s", file=sys.stderr
        )
    label = f"{streams:,} streams, {source}, gc {gc_setting}" + (", traced" if trace else "")
    print(
        f"  {label}: p99 {result['delay_p99_ms']:.2f} ms, lag p99 {result['lag_p99_ms']:.2f} ms, "
        f"{result['errors']} errors",
        file=sys.stderr,
    )
    return result


def plan(quick: bool) -> dict[str, Any]:
    """Stream counts, the GC and source comparisons, and the timing of each child."""
    if quick:
        return {
            "sweep": [20, 60],
            "gc_at": [20],
            "wheel_at": [20],
            "timing": {"ramp": 0.15, "warmup": 0.15, "window_s": 0.4},
            "traced_timing": {"ramp": 0.2, "warmup": 0.1, "window_s": 0.2},
        }
    return {
        "sweep": [250, 500, 1_000, 2_000, 5_000, 10_000],
        "gc_at": [2_000, 5_000],
        "wheel_at": [1_000, 2_000, 5_000],
        "timing": {"ramp": 2.0, "warmup": 1.0, "window_s": 5.0},
        "traced_timing": {"ramp": 2.0, "warmup": 0.5, "window_s": 0.5},
    }


def main(args: argparse.Namespace) -> None:
    p = plan(args.quick)
    timing, traced_timing = p["timing"], p["traced_timing"]
    rows: list[dict[str, Any]] = []
    for n in p["sweep"]:
        row = run_child(n, timing=timing)
        row["traced_kib_per_stream"] = run_child(n, trace=True, timing=traced_timing)["traced_kib_per_stream"]
        rows.append(row)
    for n in p["gc_at"]:
        for setting in ("freeze", "gen0"):
            rows.append(run_child(n, gc_setting=setting, timing=timing))
    for n in p["wheel_at"]:
        rows.append(run_child(n, source="wheel", timing=timing))

    sweep = [r for r in rows if r["source"] == "scripted" and r["gc_setting"] == "default"]
    under = [r["streams"] for r in sweep if r["delay_p99_ms"] < TARGET_P99_MS]
    largest = max(under) if under else 0
    biggest = sweep[-1]
    notes = [
        f"Each stream: one {DELTA_SIZE}-character delta every {PERIOD * 1e3:g} ms, sentence chunking, "
        f"three no-op requirements, events read; random start over a {timing['ramp']:g} s ramp, "
        f"{timing['warmup']:g} s warm-up, then a {timing['window_s']:g} s window. One fresh process per row.",
        "Delay: from the thunk receiving the delta that released a chunk to the consumer reading that "
        "chunk's ChunkEvent. Loop lag: how late a 1 ms sleep wakes. CPU per delta: process time in the "
        "window / deltas produced in it. Delivered / nominal: deltas produced / (streams x window / 20 ms): "
        "below 1 when the per-stream sleeps drift or the loop is saturated.",
        "GC settings are process settings of the benchmark child (the library changes none): 'freeze' "
        f"calls gc.freeze() after the warm-up; 'gen0' sets the gen-0 threshold to {GEN0_THRESHOLD:,}. "
        "Source 'wheel': every stream paced by one shared 1 ms ticker instead of a sleep per stream.",
        f"Largest N with p99 under {TARGET_P99_MS:g} ms (scripted source, default GC): {largest:,} "
        f"(target: ≥ {TARGET_STREAMS:,}). {biggest['streams']:,} streams: {biggest['errors']} errors, "
        f"{biggest['unfinished']} unfinished.",
        "RSS per stream: (RSS at the end of the window - RSS before the streams) / N. Traced: "
        "tracemalloc's current heap at the end of a separate, untimed run's window / N "
        f"(target ≤ {TARGET_KIB_PER_STREAM:g} KiB).",
    ]
    hung = [f"{r['streams']:,} ({r['source']}, gc {r['gc_setting']})" for r in rows if r["exit_hung"]]
    if hung:
        notes.append(
            "Children whose asyncio.run did not return after their streams ended (tasks the runs left "
            f"behind ignored cancellation; killed, figures kept): {', '.join(hung)}."
        )
    write_result(
        "fanout_paced",
        title="Paced fan-out: streams at 20 ms per delta, delay from delta to ChunkEvent",
        columns=COLUMNS,
        rows=rows,
        params={"period_s": PERIOD, "delta_chars": DELTA_SIZE, "requirements": 3, "plan": p},
        notes=notes,
        quick=args.quick,
        out=args.out if args.out is not None else RESULTS_DIR / "fanout_paced.json",
        extra={"largest_streams_under_target": largest},
    )


def _child_main(spec: str) -> None:
    options = json.loads(spec)
    outcome = asyncio.run(
        _child(
            options["streams"],
            options["source"],
            options["gc_setting"],
            options["trace"],
            options["ramp"],
            options["warmup"],
            options["window_s"],
        )
    )
    print(json.dumps(outcome))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child_main(sys.argv[2])
    else:
        main(parse_args(__doc__ or ""))
