"""Fan-out, unpaced: 1,000 and 5,000 concurrent streams on one event loop, three requirements each.

Every stream is a full pipeline run (``ScriptedBackend``, one loop turn per delta,
sentence chunking, three no-op requirements, events consumed), all started at once
with ``asyncio.gather``. Each measurement runs in a fresh child process, so its
peak resident memory (``ru_maxrss``) belongs to that run alone: memory per stream
is (peak RSS - RSS before the streams started) / streams. One more child per size
runs under ``tracemalloc`` (slower, so it is not timed) for the peak of Python
allocations per stream. The scaling figure is the ratio of the median wall times of
the largest and the smallest size (target: 5,000 streams cost at most 5.5x
1,000 streams, i.e. linear within noise).

The same sizes run the plain-asyncio floor (``_ours.run_floor``: the same chunking,
checks awaited inline, and events without Rx), alternating with the pipeline (the
order flipping every repeat), so the machine's own
scaling (CPython's full garbage collections and the caches, on a heap 5x larger) is
measured beside ours. Each child also reports its garbage-collection time (``gc.callbacks``).

Run: ``python benchmarks/fanout.py [--quick] [--out PATH]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from _harness import alternate, make_text, parse_args, run_async, split_deltas, summarize, write_result

STREAMS = (1_000, 5_000)
QUICK_STREAMS = (50, 200)
CHARS_PER_STREAM = 500
DELTA_SIZE = 4
# Wall time may grow at most 1.1x faster than the stream count (5.5x for 5x the streams).
TARGET_SCALING = 1.1

COLUMNS = [
    ("streams", "streams"),
    ("runs", "runs"),
    ("errors", "errors"),
    ("engine", "engine"),
    ("wall_s", "wall time (s)"),
    ("gc_s", "of which GC (s)"),
    ("deltas_per_s", "deltas/s (all streams)"),
    ("rss_kib_per_stream", "peak RSS per stream (KiB)"),
    ("traced_kib_per_stream", "peak Python heap per stream (KiB)"),
]


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


async def _worker(streams: int, chars: int, trace: bool, floor: bool) -> dict[str, Any]:
    # Imported here: the parent process only orchestrates.
    import gc

    from _ours import NoOpRequirement, run_floor, run_ours

    run = run_floor if floor else run_ours
    gc_time = [0.0, 0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_time[1] = time.perf_counter()
        else:
            gc_time[0] += time.perf_counter() - gc_time[1]

    gc.callbacks.append(on_gc)
    deltas = split_deltas(make_text(chars), DELTA_SIZE)
    requirements = [NoOpRequirement() for _ in range(3)]
    rss_before = _rss_kib()
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    results = await asyncio.gather(
        *(run(deltas, requirements) for _ in range(streams)), return_exceptions=True
    )
    wall = time.perf_counter() - start
    gc.callbacks.remove(on_gc)
    traced_peak = tracemalloc.get_traced_memory()[1] if trace else 0
    errors = [r for r in results if isinstance(r, BaseException)]
    incomplete = 0 if floor else sum(1 for r in results if not isinstance(r, BaseException) and not r[2])
    return {
        "streams": streams,
        "deltas": streams * len(deltas),
        "wall_s": wall,
        "gc_s": gc_time[0],
        "errors": len(errors) + incomplete,
        "first_error": repr(errors[0]) if errors else None,
        "rss_before_kib": rss_before,
        "rss_peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "traced_peak_bytes": traced_peak,
    }


def run_child(streams: int, chars: int, trace: bool, floor: bool = False) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter and return its JSON line."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(streams), "--chars", str(chars)]
    if trace:
        cmd.append("--trace")
    if floor:
        cmd.append("--floor")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"fan-out child {cmd} failed with exit code {proc.returncode}:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def measure(streams: int, chars: int, repeats: int) -> list[dict[str, Any]]:
    """*repeats* timed children of the pipeline and of the floor, alternating, and one traced
    child of each, for one stream count: two rows."""
    runs: dict[str, list[dict[str, Any]]] = {"rxllm": [], "plain asyncio": []}
    order = []
    for _, side in alternate(repeats, list(runs)):  # pipeline first, then floor first, ...
        runs[side].append(run_child(streams, chars, False, floor=side != "rxllm"))
        order.append(side)
    return [
        {
            **_row(side, streams, chars, side_runs, run_child(streams, chars, True, floor=side != "rxllm")),
            "run_order": order,
        }
        for side, side_runs in runs.items()
    ]


def _row(
    engine: str, streams: int, chars: int, runs: list[dict[str, Any]], traced: dict[str, Any]
) -> dict[str, Any]:
    errors = sum(r["errors"] for r in runs) + traced["errors"]
    return {
        "engine": engine,
        "streams": streams,
        "chars_per_stream": chars,
        "runs": len(runs),
        "errors": errors,
        "first_error": next((r["first_error"] for r in [*runs, traced] if r["first_error"]), None),
        "wall_s": summarize([r["wall_s"] for r in runs]),
        "gc_s": summarize([r["gc_s"] for r in runs]),
        "deltas_per_s": summarize([r["deltas"] / r["wall_s"] for r in runs]),
        "rss_kib_per_stream": summarize([(r["rss_peak_kib"] - r["rss_before_kib"]) / streams for r in runs]),
        "traced_kib_per_stream": traced["traced_peak_bytes"] / 1024 / streams,
        "deltas_per_stream": runs[0]["deltas"] // streams,
    }


def main(args: argparse.Namespace) -> None:
    sizes = QUICK_STREAMS if args.quick else STREAMS
    chars = 200 if args.quick else CHARS_PER_STREAM
    repeats = 2 if args.quick else 3
    rows = [row for n in sizes for row in measure(n, chars, repeats)]
    ours = [r for r in rows if r["engine"] == "rxllm"]
    floors = [r for r in rows if r["engine"] != "rxllm"]
    small, large = ours[0], ours[-1]
    wall_ratio = large["wall_s"]["median"] / small["wall_s"]["median"]
    floor_ratio = floors[-1]["wall_s"]["median"] / floors[0]["wall_s"]["median"]
    stream_ratio = large["streams"] / small["streams"]
    target_ratio = TARGET_SCALING * stream_ratio
    write_result(
        "fanout",
        title="Fan-out: concurrent streams on one loop",
        columns=COLUMNS,
        rows=rows,
        params={
            "streams": list(sizes),
            "chars_per_stream": chars,
            "delta_chars": DELTA_SIZE,
            "requirements": 3,
        },
        notes=[
            f"Each stream: {chars:,} characters in {DELTA_SIZE}-character deltas, sentence chunking, three "
            "no-op requirements, events consumed; all streams started at once on one loop, no pacing. "
            "Median [min, max] over runs, each in a fresh process.",
            "Peak RSS per stream: (ru_maxrss - RSS before the streams) / streams. Peak Python heap: "
            "tracemalloc peak / streams, from one separate untimed run.",
            f"Scaling: {large['streams']:,} streams took {wall_ratio:.2f}x the time of {small['streams']:,} "
            f"({stream_ratio:g}x the streams; target ≤ {target_ratio:g}x). "
            "The plain-asyncio floor, measured alternately in the same run (the order flipping each "
            f"repeat): {floor_ratio:.2f}x.",
        ],
        quick=args.quick,
        out=args.out,
        extra={
            "scaling": {
                "streams": [small["streams"], large["streams"]],
                "wall_ratio": wall_ratio,
                "floor_wall_ratio": floor_ratio,
                "stream_ratio": stream_ratio,
                "target_ratio": target_ratio,
            }
        },
    )


if __name__ == "__main__":
    if "--worker" in sys.argv:
        parser = argparse.ArgumentParser()
        parser.add_argument("--worker", type=int, required=True)
        parser.add_argument("--chars", type=int, required=True)
        parser.add_argument("--trace", action="store_true")
        parser.add_argument("--floor", action="store_true")
        worker_args = parser.parse_args()
        outcome = run_async(
            lambda: _worker(worker_args.worker, worker_args.chars, worker_args.trace, worker_args.floor)
        )
        print(json.dumps(outcome))
    else:
        main(parse_args(__doc__ or ""))
