"""Throughput: deltas per second through the full pipeline against a plain-asyncio floor.

The pipeline: ``stream_with_chunking`` over a ``ScriptedBackend`` (one loop turn per
delta, no pacing), sentence chunking, three no-op requirements, every event
consumed through ``result.events()``. The floor (``_ours.run_floor``): the fastest
honest plain-asyncio code doing the same work: the same chunking (our ``Chunker``),
one loop turn per delta, each chunk's three checks awaited inline (no task, no
``gather``), the final ``validate`` calls, the same event objects, no Rx. Both sides
run in this process, alternating on every repeat; the ratio is ours / floor in
deltas per second (1.0 = as fast as the floor).

Run: ``python benchmarks/throughput.py [--quick] [--out PATH]``
"""

from __future__ import annotations

import argparse
from statistics import median
from typing import Any

from _harness import alternate, make_text, parse_args, run_async, split_deltas, summarize, timed, write_result
from _ours import NoOpRequirement, run_floor, run_ours

COLUMNS = [
    ("delta_chars", "delta size (chars)"),
    ("deltas", "deltas per run"),
    ("runs", "runs per side"),
    ("ours_deltas_per_s", "pipeline (deltas/s)"),
    ("floor_deltas_per_s", "plain-asyncio floor (deltas/s)"),
    ("ratio_to_floor", "pipeline / floor"),
    ("overhead_us_per_delta", "pipeline overhead (µs/delta)"),
]


async def measure(n_chars: int, delta_size: int, repeats: int) -> dict[str, Any]:
    """Alternate pipeline and floor *repeats* times on one workload."""
    deltas = split_deltas(make_text(n_chars), delta_size)
    seconds: dict[str, list[float]] = {"ours": [], "floor": []}
    requirements = [NoOpRequirement() for _ in range(3)]
    expected_events: int | None = None
    for _, side in alternate(repeats, ["ours", "floor"]):
        if side == "ours":
            elapsed, (_, n_events, completed) = await timed(lambda: run_ours(deltas, requirements))
            if not completed:
                raise RuntimeError("the pipeline run did not complete: a no-op requirement cannot fail")
        else:
            elapsed, n_events = await timed(lambda: run_floor(deltas, requirements))
        if expected_events is None:
            expected_events = n_events
        elif n_events != expected_events:
            raise RuntimeError(
                f"the pipeline and the floor produced different event counts ({n_events} vs "
                f"{expected_events}); they are not doing the same work"
            )
        seconds[side].append(elapsed)
    n = len(deltas)
    ours = summarize([n / s for s in seconds["ours"]])
    floor = summarize([n / s for s in seconds["floor"]])
    pairs = [f / o for o, f in zip(seconds["ours"], seconds["floor"], strict=True)]
    return {
        "n_chars": n_chars,
        "delta_chars": delta_size,
        "deltas": n,
        "runs": repeats,
        "events": expected_events,
        "ours_deltas_per_s": ours,
        "floor_deltas_per_s": floor,
        "ratio_to_floor": summarize(pairs),
        "overhead_us_per_delta": 1e6 * (median(seconds["ours"]) - median(seconds["floor"])) / n,
        "seconds": seconds,
    }


def main(args: argparse.Namespace) -> None:
    n_chars = 5_000 if args.quick else 200_000
    repeats = 3 if args.quick else 9

    async def run() -> list[dict[str, Any]]:
        return [await measure(n_chars, size, repeats) for size in (4, 1)]

    rows = run_async(run)
    write_result(
        "throughput",
        title="Throughput: full pipeline against the plain-asyncio floor",
        columns=COLUMNS,
        rows=[{k: v for k, v in row.items() if k != "seconds"} for row in rows],
        params={"n_chars": n_chars, "requirements": 3, "chunking": "sentence", "repeats": repeats},
        notes=[
            f"{n_chars:,} characters of prose per run, sentence chunking, three no-op requirements, "
            "events consumed; pipeline and floor alternate in one process. Ratio: per repeat, "
            "floor time / pipeline time (median and range).",
            "Target: at least 0.85x the floor (checks awaited inline in the floor: no task per check).",
        ],
        quick=args.quick,
        out=args.out,
        extra={"seconds": {str(row["delta_chars"]): row["seconds"] for row in rows}},
    )


if __name__ == "__main__":
    main(parse_args(__doc__ or ""))
