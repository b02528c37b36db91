"""Side by side with Mellea 0.7.0: the same workloads through both ``stream_with_chunking``s.

Runs in the Mellea virtualenv that ``make bench`` creates
(``benchmarks/.mellea-venv``: ``mellea==0.7.0`` plus this project), so both sides
run in one process, alternating on every repeat. Mellea is fed by
``_mellea.ReplayBackend``, a Mellea ``Backend`` subclass pushing the same deltas
the same way as our ``ScriptedBackend`` (one loop turn per delta, or the given
interval). Both sides: sentence chunking, three requirements (no-ops, or one
failing), every event consumed.

Workloads: cancel latency (verdict -> backend/feeder task cancelled) at 0, 1 and
20 ms delta intervals; one 10,000-character stream (throughput); long outputs of
10,000 to 160,000 characters (Mellea re-splits the accumulated text on every
``astream()`` batch, so its time grows quadratically: the sizes stop at 160,000,
where one Mellea run takes about a minute); 1,000 concurrent streams. The ratio
is ours / Mellea: below 1 means we are faster.

Run: ``benchmarks/.mellea-venv/bin/python benchmarks/vs_mellea.py [--quick] [--out PATH]``
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from _harness import (
    alternate,
    loglog_slope,
    make_text,
    parse_args,
    ratio,
    run_async,
    sentence_prefix_deltas,
    split_deltas,
    summarize,
    timed,
    us,
    write_result,
)

try:
    import _mellea
except ImportError as exc:  # pragma: no cover - depends on the interpreter
    raise SystemExit(
        f"vs_mellea.py needs Mellea 0.7.0 ({exc}); run it with the Mellea virtualenv's Python: "
        "`make bench` creates benchmarks/.mellea-venv, or run `python3 -m venv benchmarks/.mellea-venv && "
        "benchmarks/.mellea-venv/bin/pip install mellea==0.7.0 -e .`"
    ) from exc
import _ours

DELTA_SIZE = 4
FAIL_ON_SENTENCE = 2

COLUMNS = [
    ("workload", "workload"),
    ("metric", "metric"),
    ("runs", "runs per side"),
    ("ours", "ours"),
    ("mellea", "Mellea 0.7.0"),
    ("ratio", "ours / Mellea"),
]

Side = Callable[[], Awaitable[float]]


async def compare(ours: Side, mellea: Side, repeats: int) -> tuple[list[float], list[float]]:
    """Alternate the two sides *repeats* times; each returns its measured value."""
    values: dict[str, list[float]] = {"ours": [], "mellea": []}
    for _, side in alternate(repeats, ["ours", "mellea"]):
        values[side].append(await (ours if side == "ours" else mellea)())
    return values["ours"], values["mellea"]


def row(workload: str, metric: str, ours: list[float], mellea: list[float], **extra: Any) -> dict[str, Any]:
    """One table row: both summaries and the ratio of medians."""
    o, m = summarize(ours), summarize(mellea)
    return {
        "workload": workload,
        "metric": metric,
        "runs": len(ours),
        "ours": o,
        "mellea": m,
        "ratio": ratio(o, m),
    } | extra


# -- workloads ------------------------------------------------------------------------


async def cancel_workload(interval_ms: float, repeats: int) -> list[dict[str, Any]]:
    """Verdict -> task cancelled, and deltas produced after the verdict, on both sides."""
    deltas, _ = sentence_prefix_deltas(FAIL_ON_SENTENCE, DELTA_SIZE)
    delay = interval_ms / 1000
    after: dict[str, list[float]] = {"ours": [], "mellea": []}

    async def ours() -> float:
        probe = _ours.Probe()
        reqs = [_ours.FailOnChunk(FAIL_ON_SENTENCE, probe), _ours.NoOpRequirement(), _ours.NoOpRequirement()]
        _, (generation, _, completed) = await timed(
            lambda: _ours.run_ours(deltas, reqs, delay=delay, probe=probe)
        )
        assert not completed and generation.cancelled_at is not None and probe.verdict_at is not None
        after["ours"].append(generation.deltas_sent - probe.sent_at_verdict)
        return us(generation.cancelled_at - probe.verdict_at)

    async def mellea() -> float:
        probe = _mellea.Probe()
        reqs = [
            _mellea.FailOnChunk(FAIL_ON_SENTENCE, probe),
            _mellea.NoOpRequirement(),
            _mellea.NoOpRequirement(),
        ]
        _, (record, _, completed) = await timed(
            lambda: _mellea.run_mellea(deltas, reqs, delay=delay, probe=probe)
        )
        if completed or record.cancelled_at is None or probe.verdict_at is None:
            raise RuntimeError("Mellea's failing run was not cancelled; the side-by-side is not comparable")
        after["mellea"].append(record.deltas_sent - probe.sent_at_verdict)
        return us(record.cancelled_at - probe.verdict_at)

    o, m = await compare(ours, mellea, repeats)
    label = f"cancel, {interval_ms:g} ms interval"
    return [
        row(label, "verdict → task cancelled (µs)", o, m),
        row(label, "deltas produced after verdict", after["ours"], after["mellea"]),
    ]


async def stream_workload(n_chars: int, repeats: int, delta_size: int = DELTA_SIZE) -> dict[str, Any]:
    """One stream of *n_chars*, three no-op requirements: seconds per run on both sides."""
    deltas = split_deltas(make_text(n_chars), delta_size)
    ours_reqs = [_ours.NoOpRequirement() for _ in range(3)]
    mellea_reqs = [_mellea.NoOpRequirement() for _ in range(3)]
    events: dict[str, int] = {}

    async def ours() -> float:
        elapsed, (_, n_events, completed) = await timed(lambda: _ours.run_ours(deltas, ours_reqs))
        assert completed
        events["ours"] = n_events
        return elapsed

    async def mellea() -> float:
        elapsed, (_, n_events, completed) = await timed(lambda: _mellea.run_mellea(deltas, mellea_reqs))
        assert completed
        events["mellea"] = n_events
        return elapsed

    o, m = await compare(ours, mellea, repeats)
    if events["ours"] != events["mellea"]:
        print(
            f"note: {n_chars:,} chars: ours emitted {events['ours']} events, Mellea {events['mellea']}",
            file=sys.stderr,
        )
    return row(
        f"{n_chars:,} chars, {delta_size}-char deltas",
        "time per stream (s)",
        o,
        m,
        n_chars=n_chars,
        deltas=len(deltas),
    )


async def fanout_workload(streams: int, chars: int, repeats: int) -> dict[str, Any]:
    """*streams* concurrent streams on one loop: wall seconds on both sides."""
    deltas = split_deltas(make_text(chars), DELTA_SIZE)
    ours_reqs = [_ours.NoOpRequirement() for _ in range(3)]
    mellea_reqs = [_mellea.NoOpRequirement() for _ in range(3)]

    async def ours() -> float:
        elapsed, results = await timed(
            lambda: asyncio.gather(*(_ours.run_ours(deltas, ours_reqs) for _ in range(streams)))
        )
        assert all(r[2] for r in results)
        return float(elapsed)

    async def mellea() -> float:
        elapsed, results = await timed(
            lambda: asyncio.gather(*(_mellea.run_mellea(deltas, mellea_reqs) for _ in range(streams)))
        )
        assert all(r[2] for r in results)
        return float(elapsed)

    o, m = await compare(ours, mellea, repeats)
    return row(f"{streams:,} concurrent streams x {chars:,} chars", "wall time (s)", o, m)


def plan(quick: bool) -> dict[str, Any]:
    """Sizes and repeats; the full plan keeps `make bench` within its 15-minute budget."""
    if quick:
        return {
            "cancel": {0.0: 3, 1.0: 2, 20.0: 1},
            "throughput": (2_000, 3),
            "long": [(2_000, 2), (4_000, 2)],
            "fanout": (20, 200, 1),
        }
    return {
        "cancel": {0.0: 31, 1.0: 15, 20.0: 5},
        "throughput": (10_000, 9),
        "long": [(10_000, 5), (20_000, 3), (40_000, 3), (80_000, 3), (160_000, 3)],
        "fanout": (1_000, 500, 3),
    }


def main(args: argparse.Namespace) -> None:
    p = plan(args.quick)

    async def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        rows: list[dict[str, Any]] = []
        for interval, repeats in p["cancel"].items():
            rows.extend(await cancel_workload(interval, repeats))
        n_chars, repeats = p["throughput"]
        throughput = await stream_workload(n_chars, repeats)
        throughput["workload"] = f"throughput: {throughput['workload']}"
        rows.append(throughput)
        long_rows = []
        for n_chars, repeats in p["long"]:
            long_row = await stream_workload(n_chars, repeats)
            long_row["workload"] = f"long output: {long_row['workload']}"
            long_rows.append(long_row)
            rows.append(long_row)
            print(
                f"  {long_row['workload']}: ours {long_row['ours']['median']:.3f} s, "
                f"Mellea {long_row['mellea']['median']:.3f} s",
                file=sys.stderr,
            )
        streams, chars, repeats = p["fanout"]
        rows.append(await fanout_workload(streams, chars, repeats))
        return rows, long_rows

    rows, long_rows = run_async(run)
    xs = [r["n_chars"] for r in long_rows]
    slopes = {
        "ours": loglog_slope(xs, [r["ours"]["median"] for r in long_rows]),
        "mellea": loglog_slope(xs, [r["mellea"]["median"] for r in long_rows]),
    }
    biggest = long_rows[-1]
    speedup = biggest["mellea"]["median"] / biggest["ours"]["median"]
    cancel0 = rows[0]
    write_result(
        "vs_mellea",
        title="Side by side with Mellea 0.7.0 (same process, alternating)",
        columns=COLUMNS,
        rows=rows,
        params={
            "plan": {
                k: (v if not isinstance(v, dict) else {str(a): b for a, b in v.items()}) for k, v in p.items()
            },
            "delta_chars": DELTA_SIZE,
            "requirements": 3,
            "chunking": "sentence",
        },
        notes=[
            "Median [min, max] over the runs; both sides in one process, alternating every repeat. "
            "Ratio = median ours / median Mellea (below 1: ours is faster or lower).",
            f"Long outputs, exponent of time against length (log-log fit, 1.0 = linear): ours "
            f"{slopes['ours']:.2f}, Mellea {slopes['mellea']:.2f}. At {biggest['n_chars']:,} characters "
            f"ours is {speedup:,.0f}x faster (target: at least 100x).",
            f"Cancel latency at 0 ms: ours {cancel0['ours']['median']:.1f} µs, Mellea "
            f"{cancel0['mellea']['median']:.1f} µs (target: under 100 µs and no worse than Mellea).",
            "Mellea's feeder is its own send_to_queue() (as its Ollama/OpenAI backends use) over the "
            "same delta iterator; its thunk queue holds 20 items and astream() waits for 4 items per "
            "batch, so unpaced it reads ahead of the verdict.",
        ],
        quick=args.quick,
        out=args.out,
        extra={
            "long_output_curve": [
                {
                    "n_chars": r["n_chars"],
                    "ours_s": r["ours"]["median"],
                    "mellea_s": r["mellea"]["median"],
                    "mellea_min_s": r["mellea"]["min"],
                    "mellea_max_s": r["mellea"]["max"],
                }
                for r in long_rows
            ],
            "loglog_slope": slopes,
            "speedup_at_largest": speedup,
        },
    )


if __name__ == "__main__":
    main(parse_args(__doc__ or ""))
