"""Side by side with Mellea 0.7.0 and Mellea 0.8.0: throughput, long outputs up to 160k characters, fan-out.

The same workloads through rxllm's ``stream_with_chunking``, Mellea 0.7.0's
``stream_with_chunking`` and Mellea 0.8.0's ``stream(..., as_events=True)``: sentence
chunking, three no-op requirements, every event consumed, deltas pushed by each
engine's own kind of backend task (``ScriptedBackend``; Mellea ``Backend`` subclasses
running Mellea's ``send_to_queue``, see ``_mellea.py``), one loop
turn per delta. Two Mellea versions cannot share an interpreter, so each engine runs
in its own persistent worker process (``_harness.Worker``; rxllm in this venv, each
Mellea in the venv ``make bench`` builds) and this script alternates them round by
round, one running at a time. Each round is one timed run per engine (``gc.collect()``
before it), after two untimed warm-up runs per engine.

Workloads: one 10,000-character stream (throughput); long outputs of 10,000 to
160,000 characters (Mellea's time grows quadratically, so the sizes stop at 160,000,
where one Mellea run takes seconds to a minute); 1,000 concurrent 500-character
streams (fan-out). Ratios are rxllm / each Mellea (below 1: rxllm is faster). The
cancel-latency comparison is in ``cancel_latency.py``.

Run: ``python benchmarks/vs_mellea.py [--quick] [--out PATH] [--engines rxllm,mellea-0.7.0,mellea-0.8.0]``
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from _harness import (
    MELLEA_07,
    MELLEA_08,
    RXLLM,
    Worker,
    alternate,
    loglog_slope,
    make_text,
    parse_args,
    ratio,
    select_engines,
    split_deltas,
    summarize,
    write_result,
)

DELTA_SIZE = 4
TARGET_160K_SPEEDUP = 2.0

COLUMNS = [
    ("workload", "workload"),
    ("metric", "metric"),
    ("runs", "runs per engine"),
    (RXLLM, "rxllm"),
    (MELLEA_07, "Mellea 0.7.0"),
    (MELLEA_08, "Mellea 0.8.0"),
    ("vs_mellea_07", "rxllm / Mellea 0.7.0"),
    ("vs_mellea_08", "rxllm / Mellea 0.8.0"),
]


def _row(workload: str, metric: str, values: dict[str, list[float]], **extra: Any) -> dict[str, Any]:
    summaries = {engine: summarize(values.get(engine, [])) for engine in (RXLLM, MELLEA_07, MELLEA_08)}
    return {
        "workload": workload,
        "metric": metric,
        "runs": len(values[RXLLM]),
        **summaries,
        "vs_mellea_07": ratio(summaries[RXLLM], summaries[MELLEA_07]),
        "vs_mellea_08": ratio(summaries[RXLLM], summaries[MELLEA_08]),
    } | extra


def stream_workload(workers: dict[str, Worker], n_chars: int, rounds: int) -> dict[str, Any]:
    """One stream of *n_chars* per engine per round: seconds per stream."""
    deltas = split_deltas(make_text(n_chars), DELTA_SIZE)
    seconds: dict[str, list[float]] = {engine: [] for engine in workers}
    events: dict[str, int] = {}
    for _, engine in alternate(rounds, list(workers)):
        answer = workers[engine].call("stream", deltas=deltas, runs=1)
        seconds[engine].extend(answer["seconds"])
        events[engine] = answer["events"]
    if len(set(events.values())) > 1:
        print(f"note: {n_chars:,} chars: events per engine differ: {events}", file=sys.stderr)
    return _row(
        f"{n_chars:,} chars, {DELTA_SIZE}-char deltas",
        "time per stream (s)",
        seconds,
        n_chars=n_chars,
        deltas=len(deltas),
    )


def fanout_workload(workers: dict[str, Worker], streams: int, chars: int, rounds: int) -> dict[str, Any]:
    """*streams* concurrent streams on one loop per engine per round: wall seconds."""
    deltas = split_deltas(make_text(chars), DELTA_SIZE)
    seconds: dict[str, list[float]] = {engine: [] for engine in workers}
    for _, engine in alternate(rounds, list(workers)):
        answer = workers[engine].call("fanout", deltas=deltas, streams=streams)
        if answer["failures"]:
            raise RuntimeError(f"{engine}: {answer['failures']} of {streams} fan-out streams failed")
        seconds[engine].append(answer["seconds"])
    return _row(f"{streams:,} concurrent streams x {chars:,} chars", "wall time (s)", seconds)


def plan(quick: bool) -> dict[str, Any]:
    """Sizes and rounds."""
    if quick:
        return {
            "throughput": (2_000, 2),
            "long": [(2_000, 1), (4_000, 1)],
            "fanout": (20, 200, 1),
        }
    return {
        "throughput": (10_000, 9),
        "long": [(10_000, 5), (20_000, 3), (40_000, 3), (80_000, 3), (160_000, 3)],
        "fanout": (1_000, 500, 3),
    }


def main(args: argparse.Namespace) -> None:
    engines, notes = select_engines(args.engines)
    if RXLLM not in engines:
        raise SystemExit("vs_mellea.py needs the rxllm engine (the ratios are rxllm / Mellea)")
    p = plan(args.quick)
    workers = {engine: Worker(engine) for engine in engines}
    rows: list[dict[str, Any]] = []
    long_rows: list[dict[str, Any]] = []
    try:
        warm_up = split_deltas(make_text(2_000), DELTA_SIZE)
        for worker in workers.values():  # imports, first-call caches: not measured
            worker.call("stream", deltas=warm_up, runs=2)
        n_chars, rounds = p["throughput"]
        throughput = stream_workload(workers, n_chars, rounds)
        throughput["workload"] = f"throughput: {throughput['workload']}"
        rows.append(throughput)
        for n_chars, rounds in p["long"]:
            long_row = stream_workload(workers, n_chars, rounds)
            long_row["workload"] = f"long output: {long_row['workload']}"
            long_rows.append(long_row)
            rows.append(long_row)
            print(
                f"  {long_row['workload']}: "
                + ", ".join(f"{e} {long_row[e]['median']:.3f} s" for e in engines),
                file=sys.stderr,
            )
        streams, chars, rounds = p["fanout"]
        rows.append(fanout_workload(workers, streams, chars, rounds))
    finally:
        for worker in workers.values():
            worker.close()

    xs = [r["n_chars"] for r in long_rows]
    slopes = {
        engine: loglog_slope(xs, [r[engine]["median"] for r in long_rows]) if engine in engines else math.nan
        for engine in (RXLLM, MELLEA_07, MELLEA_08)
    }
    biggest = long_rows[-1]
    speedups = {
        engine: biggest[engine]["median"] / biggest[RXLLM]["median"]
        for engine in (MELLEA_07, MELLEA_08)
        if engine in engines
    }
    write_result(
        "vs_mellea",
        title="Side by side with Mellea 0.7.0 and 0.8.0 (one worker process per engine, alternating)",
        columns=COLUMNS,
        rows=rows,
        params={
            "plan": p,
            "delta_chars": DELTA_SIZE,
            "requirements": 3,
            "chunking": "sentence",
            "engines": engines,
        },
        notes=[
            "Median [min, max] over the rounds; each engine in its own worker process, alternating round by "
            "round. Ratio = median rxllm / median Mellea (below 1: rxllm is faster).",
            "Long outputs, exponent of time against length (log-log fit, 1.0 = linear): "
            + ", ".join(f"{e} {slopes[e]:.2f}" for e in engines)
            + ". At "
            + f"{biggest['n_chars']:,} characters rxllm is "
            + ", ".join(f"{s:,.1f}x faster than {e}" for e, s in speedups.items())
            + f" (target: ≥ {TARGET_160K_SPEEDUP:g}x faster than Mellea 0.8.0).",
            "Mellea's feeders run its own send_to_queue() (as its Ollama/OpenAI backends do) over the same "
            "delta iterator; its thunk queue is bounded and astream() takes deltas in batches, so unpaced "
            "it reads ahead.",
            *notes,
        ],
        quick=args.quick,
        out=args.out,
        extra={
            "long_output_curve": [
                {"n_chars": r["n_chars"]}
                | {f"{e}_s": r[e]["median"] for e in engines}
                | {f"{e}_min_s": r[e]["min"] for e in engines}
                | {f"{e}_max_s": r[e]["max"] for e in engines}
                for r in long_rows
            ],
            "loglog_slope": slopes,
            "speedup_at_largest": speedups,
        },
    )


if __name__ == "__main__":
    main(parse_args(__doc__ or ""))
