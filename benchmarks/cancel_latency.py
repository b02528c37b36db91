"""Cancel latency: from the failing verdict to the producer's ``finally``, each side in its own process.

What is measured, the same way for every side: a requirement fails the second
sentence; the verdict is the ``perf_counter`` reading inside the check right before
it returns "fail"; the producer of the deltas records ``perf_counter`` in its
``finally`` when it stops. The latency is the difference. Three requirements per run
(the failing one and two no-ops), sentence chunking, 4-character deltas, paced at 0
(one loop turn per delta), 1 and 20 ms. Two checks: one that answers at once, and
one that suspends once (``await asyncio.sleep(0)``) on every chunk before answering.

Sides, each in a fresh worker process of its own (``_harness.Worker``):

- ``rxllm``: ``stream_with_chunking`` over the shipped ``ScriptedBackend``, no subclass:
  the stop is its own producer's ``finally`` (``generation.cancelled_at``), every event
  consumed: the path users run.
- ``mellea-0.7.0``: Mellea 0.7.0's ``stream_with_chunking``; ``mellea-0.8.0``: Mellea
  0.8.0's ``stream(..., as_events=True)``. Both fed by a Mellea ``Backend`` subclass
  running Mellea's own ``send_to_queue`` (its default per-chunk timer, as Mellea's
  shipped backends run it) over the same deltas, its task's ``finally`` recording the
  time (``_mellea.py``, one adapter for both).
- ``floor: task cancel``: plain asyncio, the check in another task, which calls
  ``producer.cancel()`` on "fail" (``_ours.cancel_floor_task_cancel``).

At every pacing and check each side first makes ten untimed warm-up runs at that
pacing (imports, caches, the allocator, the timer path); then the sides alternate
round by round (the order reversed every round), one running at a time, each round a
small batch of runs per side, 50 samples per side and row. Reported: medians [min,
max] per side, rxllm's median over each Mellea's and the floor's, and the targets: a
check that answers at once costs at most a quarter of both Mellea releases; a check
that awaits once costs at most the task-cancel floor.

Run: ``python benchmarks/cancel_latency.py [--quick] [--out PATH] [--engines rxllm,mellea-0.7.0,...]``
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from _harness import (
    MELLEA_07,
    MELLEA_08,
    RXLLM,
    Worker,
    alternate,
    parse_args,
    ratio,
    select_engines,
    sentence_prefix_deltas,
    summarize,
    write_result,
)

FAIL_ON_SENTENCE = 2
DELTA_SIZE = 4
INTERVALS_MS = (0.0, 1.0, 20.0)
FLOOR = "floor: task cancel"
TARGET_MELLEA_RATIO = 0.25  # a check that answers at once, against both Mellea releases
TARGET_FLOOR_RATIO = 1.0  # a check that awaits once, against the task-cancel floor
WARM_UP_RUNS = 10
SAMPLES = 50

COLUMNS = [
    ("validator", "check"),
    ("interval_ms", "pacing (ms)"),
    ("runs", "samples per side"),
    (RXLLM, "rxllm (µs)"),
    (FLOOR, "floor: task cancel (µs)"),
    (MELLEA_07, "Mellea 0.7.0 (µs)"),
    (MELLEA_08, "Mellea 0.8.0 (µs)"),
    ("vs_task_cancel", "rxllm / task-cancel floor"),
    ("vs_mellea_07", "rxllm / Mellea 0.7.0"),
    ("vs_mellea_08", "rxllm / Mellea 0.8.0"),
    ("rxllm_deltas_after", "rxllm deltas after verdict"),
    ("target", "target"),
    ("met", "target met"),
]


def plan(quick: bool) -> tuple[int, dict[float, tuple[int, int]]]:
    """``(warm-up runs, pacing -> (rounds, runs per side per round))``: SAMPLES per side and row."""
    if quick:
        return 2, {0.0: (2, 2), 1.0: (2, 1), 20.0: (1, 1)}
    return WARM_UP_RUNS, {0.0: (10, 5), 1.0: (25, 2), 20.0: (SAMPLES, 1)}


def measure(
    workers: dict[str, Worker], interval_ms: float, await_once: bool, warm_up: int, rounds: int, batch: int
) -> dict[str, Any]:
    """Warm every side up at this pacing, then alternate them *rounds* times: one table row."""
    deltas, _ = sentence_prefix_deltas(FAIL_ON_SENTENCE, DELTA_SIZE)
    args = {
        "deltas": deltas,
        "delay": interval_ms / 1000,
        "fail_on": FAIL_ON_SENTENCE,
        "await_once": await_once,
    }
    for side, worker in workers.items():
        worker.call(_op(side), **args, runs=warm_up)
    latency: dict[str, list[float]] = {side: [] for side in workers}
    after: dict[str, list[float]] = {side: [] for side in workers}
    for _, side in alternate(rounds, list(workers)):
        answer = workers[side].call(_op(side), **args, runs=batch)
        latency[side].extend(answer["latency_us"])
        after[side].extend(answer["deltas_after"])
    row: dict[str, Any] = {
        "validator": "awaits once" if await_once else "answers at once",
        "interval_ms": interval_ms,
        "runs": rounds * batch,
        "warm_up_runs": warm_up,
    }
    for side in (RXLLM, FLOOR, MELLEA_07, MELLEA_08):
        row[side] = summarize(latency.get(side, []))
    ours = row[RXLLM]
    row["vs_task_cancel"] = ratio(ours, row[FLOOR])
    row["vs_mellea_07"] = ratio(ours, row[MELLEA_07])
    row["vs_mellea_08"] = ratio(ours, row[MELLEA_08])
    row["rxllm_deltas_after"] = summarize(after[RXLLM])
    row["deltas_after"] = {side: summarize(values) for side, values in after.items()}
    row["samples_us"] = latency
    if await_once:
        row["target"] = f"≤ {TARGET_FLOOR_RATIO:g}x the task-cancel floor"
        row["met"] = row["vs_task_cancel"] <= TARGET_FLOOR_RATIO
    else:
        row["target"] = f"≤ {TARGET_MELLEA_RATIO:g}x both Mellea releases"
        known = [row[k] for k in ("vs_mellea_07", "vs_mellea_08") if not math.isnan(row[k])]
        row["met"] = all(v <= TARGET_MELLEA_RATIO for v in known) if len(known) == 2 else "n/a"
    return row


def _op(side: str) -> str:
    return "cancel_floor_task_cancel" if side == FLOOR else "cancel"


def main(args: argparse.Namespace) -> None:
    engines, notes = select_engines(args.engines)
    if RXLLM not in engines:
        raise SystemExit("cancel_latency.py needs the rxllm engine (its worker also runs the floor)")
    warm_up, p = plan(args.quick)
    # One fresh process per side: the floor runs in an rxllm worker of its own.
    sides = [RXLLM, FLOOR, *(e for e in engines if e != RXLLM)]
    workers: dict[str, Worker] = {}
    rows: list[dict[str, Any]] = []
    try:
        for side in sides:
            workers[side] = Worker(RXLLM if side == FLOOR else side)
        for await_once in (False, True):
            for interval in INTERVALS_MS:
                rounds, batch = p[interval]
                rows.append(measure(workers, interval, await_once, warm_up, rounds, batch))
    finally:
        for worker in workers.values():
            worker.close()
    write_result(
        "cancel_latency",
        title="Cancel latency: failing verdict → the producer's finally, side by side",
        columns=COLUMNS,
        rows=[{k: v for k, v in row.items() if k != "samples_us"} for row in rows],
        params={
            "fail_on_sentence": FAIL_ON_SENTENCE,
            "delta_chars": DELTA_SIZE,
            "requirements": 3,
            "engines": engines,
            "sides": sides,
            "warm_up_runs": warm_up,
            "plan": {str(k): {"rounds": r, "runs_per_round": b} for k, (r, b) in p.items()},
        },
        notes=[
            "Median [min, max] over the samples of each side. Verdict: perf_counter inside the check right "
            "before it returns 'fail'; stop: perf_counter in the producer's finally (rxllm: the shipped "
            "ScriptedBackend's own). Every side runs in a fresh worker process of its own, warms up with "
            f"{warm_up} untimed runs at each pacing, then the sides alternate round by round, one at a time.",
            "Task-cancel floor: plain asyncio, the check in another task, which calls producer.cancel(). "
            "'awaits once': the check awaits asyncio.sleep(0) on every chunk before answering (the floor's "
            "check too). Mellea's feeder is its own send_to_queue with its default per-chunk timer, as its "
            "shipped backends run it.",
            f"Targets: a check that answers at once: rxllm's median ≤ {TARGET_MELLEA_RATIO}x both Mellea "
            f"releases' at every pacing; a check that awaits once: ≤ {TARGET_FLOOR_RATIO:g}x the task-cancel "
            "floor.",
            *notes,
        ],
        quick=args.quick,
        out=args.out,
        extra={
            "samples_us": {
                f"{row['validator']}, {row['interval_ms']:g} ms": row["samples_us"] for row in rows
            }
        },
    )


if __name__ == "__main__":
    main(parse_args(__doc__ or ""))
