"""Cancel latency (issue 12): from the failing verdict to the producer's ``finally``, five sides alternating.

What is measured, the same way for every side: a requirement fails the second
sentence; the verdict is the ``perf_counter`` reading inside the validator right
before it returns "fail"; the producer of the deltas records ``perf_counter`` in its
``finally`` when it stops. The latency is the difference. Three requirements per run
(the failing one and two no-ops), sentence chunking, 4-character deltas, paced at 0
(one loop turn per delta), 1 and 20 ms. Two validators: one that answers at once, and
one that suspends once (``await asyncio.sleep(0)``) on every chunk before answering.

Sides:

- ``rxllm``: ``stream_with_chunking`` over ``ScriptedBackend`` (its producer's ``finally``
  sets ``generation.cancelled_at``), every event consumed.
- ``mellea-0.7.0``: Mellea 0.7.0's ``stream_with_chunking``; ``mellea-0.8.0``: Mellea
  0.8.0's ``stream(..., as_events=True)`` with ``_stream_validate`` overridden. Both fed
  by a Mellea ``Backend`` subclass running Mellea's own ``send_to_queue`` over the same
  deltas, its task's ``finally`` recording the time (``_mellea.py``, one adapter for both).
- ``floor: in-step``: a producer task that checks each chunk inline and returns on
  "fail" (the least any engine can do); ``floor: task cancel``: the check in another
  task, which calls ``producer.cancel()`` (``_ours.cancel_floor_*``).

Two Mellea versions cannot share an interpreter, so each engine runs in its own
persistent worker process (``_harness.Worker``: rxllm and the floors in this venv,
each Mellea in the venv ``make bench`` builds); this script alternates the sides round
by round (the order reversed every round), one side running at a time, each round a
small batch of runs per side, after three untimed warm-up runs per side. Reported:
medians [min, max] per side, the ratios of rxllm's median to each floor's and each
Mellea's, and the targets: rxllm within 1.5x of the in-step floor and at most a
quarter of both Mellea versions.

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
FLOOR_IN_STEP = "floor: in-step"
FLOOR_TASK_CANCEL = "floor: task cancel"
# Side -> (engine whose worker runs it, worker op).
_FLOOR_OPS = {FLOOR_IN_STEP: "cancel_floor_in_step", FLOOR_TASK_CANCEL: "cancel_floor_task_cancel"}
TARGET_FLOOR_RATIO = 1.5
TARGET_MELLEA_RATIO = 0.25

COLUMNS = [
    ("validator", "validator"),
    ("interval_ms", "pacing (ms)"),
    ("runs", "runs per side"),
    (RXLLM, "rxllm (µs)"),
    (FLOOR_IN_STEP, "floor: in-step (µs)"),
    (FLOOR_TASK_CANCEL, "floor: task cancel (µs)"),
    (MELLEA_07, "Mellea 0.7.0 (µs)"),
    (MELLEA_08, "Mellea 0.8.0 (µs)"),
    ("vs_in_step", "rxllm / in-step floor"),
    ("vs_task_cancel", "rxllm / task-cancel floor"),
    ("vs_mellea_07", "rxllm / Mellea 0.7.0"),
    ("vs_mellea_08", "rxllm / Mellea 0.8.0"),
    ("rxllm_deltas_after", "rxllm deltas after verdict"),
    ("met", "target met"),
]


def plan(quick: bool) -> dict[float, tuple[int, int]]:
    """Pacing -> (rounds, runs per side per round)."""
    if quick:
        return {0.0: (2, 1), 1.0: (1, 1), 20.0: (1, 1)}
    return {0.0: (15, 3), 1.0: (15, 2), 20.0: (9, 1)}


def measure(
    workers: dict[str, Worker], interval_ms: float, await_once: bool, rounds: int, batch: int
) -> dict[str, Any]:
    """Alternate every side *rounds* times at one pacing; one table row."""
    deltas, _ = sentence_prefix_deltas(FAIL_ON_SENTENCE, DELTA_SIZE)
    sides = [*(e for e in workers), *_FLOOR_OPS]
    latency: dict[str, list[float]] = {side: [] for side in sides}
    after: dict[str, list[float]] = {side: [] for side in sides}
    args = {
        "deltas": deltas,
        "delay": interval_ms / 1000,
        "fail_on": FAIL_ON_SENTENCE,
        "await_once": await_once,
        "runs": batch,
    }
    for _, side in alternate(rounds, sides):
        if side in _FLOOR_OPS:
            answer = workers[RXLLM].call(_FLOOR_OPS[side], **args)
        else:
            answer = workers[side].call("cancel", **args)
        latency[side].extend(answer["latency_us"])
        after[side].extend(answer["deltas_after"])
    row: dict[str, Any] = {
        "validator": "awaits once" if await_once else "answers at once",
        "interval_ms": interval_ms,
        "runs": rounds * batch,
    }
    for side in (RXLLM, FLOOR_IN_STEP, FLOOR_TASK_CANCEL, MELLEA_07, MELLEA_08):
        row[side] = summarize(latency.get(side, []))
    ours = row[RXLLM]
    row["vs_in_step"] = ratio(ours, row[FLOOR_IN_STEP])
    row["vs_task_cancel"] = ratio(ours, row[FLOOR_TASK_CANCEL])
    row["vs_mellea_07"] = ratio(ours, row[MELLEA_07])
    row["vs_mellea_08"] = ratio(ours, row[MELLEA_08])
    row["rxllm_deltas_after"] = summarize(after[RXLLM])
    row["deltas_after"] = {side: summarize(values) for side, values in after.items()}
    row["samples_us"] = latency
    checks = [row["vs_in_step"] <= TARGET_FLOOR_RATIO]
    checks += [
        row[k] <= TARGET_MELLEA_RATIO for k in ("vs_mellea_07", "vs_mellea_08") if not math.isnan(row[k])
    ]
    met = all(checks)
    both_mellea = not math.isnan(row["vs_mellea_07"]) and not math.isnan(row["vs_mellea_08"])
    row["met"] = met if (both_mellea or not met) else "floor only"
    return row


def main(args: argparse.Namespace) -> None:
    engines, notes = select_engines(args.engines)
    if RXLLM not in engines:
        raise SystemExit("cancel_latency.py needs the rxllm engine (it also runs the floors)")
    p = plan(args.quick)
    workers = {engine: Worker(engine) for engine in engines}
    rows: list[dict[str, Any]] = []
    try:
        warm_up = {
            "deltas": sentence_prefix_deltas(FAIL_ON_SENTENCE, DELTA_SIZE)[0],
            "delay": 0.0,
            "fail_on": FAIL_ON_SENTENCE,
            "await_once": False,
            "runs": 3,
        }
        for engine, worker in workers.items():  # imports, first-call caches: not measured
            worker.call("cancel", **warm_up)
            if engine == RXLLM:
                for op in _FLOOR_OPS.values():
                    worker.call(op, **warm_up)
        for await_once in (False, True):
            for interval in INTERVALS_MS:
                rounds, batch = p[interval]
                rows.append(measure(workers, interval, await_once, rounds, batch))
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
            "plan": {str(k): {"rounds": r, "runs_per_round": b} for k, (r, b) in p.items()},
        },
        notes=[
            "Median [min, max] over the runs of each side. Verdict: perf_counter inside the validator right "
            "before it returns 'fail'; stop: perf_counter in the producer's finally. Every side runs in its "
            "own worker process (the floors in rxllm's), alternating round by round, one at a time.",
            "In-step floor: the producer checks each chunk inline and returns on 'fail'. Task-cancel floor: "
            "the check runs in another task, which calls producer.cancel(). 'awaits once': the validator "
            "awaits asyncio.sleep(0) on every chunk before answering (the floors' check too).",
            f"Targets (issue 12): rxllm's median ≤ {TARGET_FLOOR_RATIO}x the in-step floor at every pacing, "
            f"and ≤ {TARGET_MELLEA_RATIO}x both Mellea versions'.",
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
