"""Cancel latency, in process: from the failing verdict to the backend's task cancelled.

A requirement fails the second sentence; the time of the verdict is read with
``perf_counter`` inside the validator, just before it returns "fail". The
``ScriptedBackend``'s producer records, in its ``finally``, when its task saw the
cancellation (``generation.cancelled_at``), and how many deltas it had produced
(``deltas_sent``). The run is repeated at delta intervals of 0 (one loop turn per
delta), 1 ms and 20 ms, with 4-character deltas and three requirements (the failing
one and two no-ops). The same measurement for Mellea is in ``vs_mellea.py``; the
HTTP connection close as seen by a loopback server is in ``http_cancel.py``.

Run: ``python benchmarks/cancel_latency.py [--quick] [--out PATH]``
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

from _harness import parse_args, run_async, sentence_prefix_deltas, summarize, timed, us, write_result
from _ours import FailOnChunk, NoOpRequirement, Probe, run_ours

FAIL_ON_SENTENCE = 2
DELTA_SIZE = 4
INTERVALS_MS = (0.0, 1.0, 20.0)

COLUMNS = [
    ("interval_ms", "delta interval (ms)"),
    ("runs", "runs"),
    ("verdict_to_cancelled_us", "verdict → task cancelled (µs)"),
    ("verdict_to_requested_us", "verdict → cancel requested (µs)"),
    ("requested_to_cancelled_us", "cancel requested → task cancelled (µs)"),
    ("deltas_after_verdict", "deltas produced after verdict"),
    ("deltas_at_verdict", "deltas produced by the verdict"),
]


async def measure(interval_ms: float, repeats: int) -> dict[str, Any]:
    """Run *repeats* failing streams at one delta interval; summarize the latencies."""
    deltas, _ = sentence_prefix_deltas(FAIL_ON_SENTENCE, DELTA_SIZE)
    total: list[float] = []
    to_request: list[float] = []
    to_cancel: list[float] = []
    after: list[float] = []
    at: list[float] = []
    for _ in range(repeats):
        probe = Probe()
        reqs = [FailOnChunk(FAIL_ON_SENTENCE, probe), NoOpRequirement(), NoOpRequirement()]
        run = functools.partial(run_ours, deltas, reqs, delay=interval_ms / 1000, probe=probe)
        _, (generation, _, completed) = await timed(run)
        if completed or probe.verdict_at is None or generation.cancelled_at is None:
            raise RuntimeError(
                f"the failing run at {interval_ms} ms was not cancelled (completed={completed}, "
                f"verdict_at={probe.verdict_at}, cancelled_at={generation.cancelled_at}); "
                "the pipeline did not stop the generation on 'fail'"
            )
        total.append(us(generation.cancelled_at - probe.verdict_at))
        if generation.cancel_requested_at is not None:
            to_request.append(us(generation.cancel_requested_at - probe.verdict_at))
            to_cancel.append(us(generation.cancelled_at - generation.cancel_requested_at))
        after.append(generation.deltas_sent - probe.sent_at_verdict)
        at.append(probe.sent_at_verdict)
    return {
        "interval_ms": interval_ms,
        "runs": repeats,
        "verdict_to_cancelled_us": summarize(total),
        "verdict_to_requested_us": summarize(to_request),
        "requested_to_cancelled_us": summarize(to_cancel),
        "deltas_after_verdict": summarize(after),
        "deltas_at_verdict": summarize(at),
        "samples_us": total,
    }


def main(args: argparse.Namespace) -> None:
    repeats = {0.0: 41, 1.0: 21, 20.0: 9} if not args.quick else {0.0: 5, 1.0: 3, 20.0: 2}

    async def run() -> list[dict[str, Any]]:
        rows = []
        for interval in INTERVALS_MS:
            rows.append(await measure(interval, repeats[interval]))
        return rows

    rows = run_async(run)
    write_result(
        "cancel_latency",
        title="Cancel latency in process: failing verdict → backend task cancelled",
        columns=COLUMNS,
        rows=[{k: v for k, v in row.items() if k != "samples_us"} for row in rows],
        params={
            "fail_on_sentence": FAIL_ON_SENTENCE,
            "delta_chars": DELTA_SIZE,
            "requirements": 3,
            "repeats": {str(k): v for k, v in repeats.items()},
        },
        notes=[
            "Median [min, max] over the runs. Verdict: perf_counter inside the validator as it returns "
            "'fail'. Task cancelled: perf_counter in the ScriptedBackend producer's finally. "
            "Cancel requested: when the pipeline called the thunk's cancel().",
            "Target (issue 5): median under 100 µs and no worse than Mellea (see vs_mellea).",
        ],
        quick=args.quick,
        out=args.out,
        extra={"samples_us": {str(row["interval_ms"]): row["samples_us"] for row in rows}},
    )


if __name__ == "__main__":
    main(parse_args(__doc__ or ""))
