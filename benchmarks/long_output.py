"""Long outputs: time against output length, 10,000 to 1,000,000 characters, 1- and 4-char deltas.

Each run is a full pipeline run (``ScriptedBackend``, one loop turn per delta,
sentence chunking, three no-op requirements, events consumed), over prose and, with
1-character deltas, over the same text with no sentence end at all: one chunk as long as
the output, which is what a chunker that re-reads its pending text makes quadratic. Linear cost means
constant time per character: the table gives it, and the fit of log(time) against
log(length) gives the exponent (1.0 = linear, 2.0 = quadratic). ``render.py``
plots the curve, beside Mellea's from ``vs_mellea.py``.

Run: ``python benchmarks/long_output.py [--quick] [--out PATH]``
"""

from __future__ import annotations

import argparse
from typing import Any

from _harness import (
    loglog_slope,
    make_text,
    parse_args,
    run_async,
    split_deltas,
    summarize,
    timed,
    write_result,
)
from _ours import NoOpRequirement, run_ours

SIZES = (10_000, 30_000, 100_000, 300_000, 1_000_000)
QUICK_SIZES = (2_000, 8_000)
DELTA_SIZES = (1, 4)
# The same text with its sentence ends taken out: the whole output is one chunk.
LONG_CHUNK_SIZES = (10_000, 100_000, 1_000_000)
QUICK_LONG_CHUNK_SIZES = (2_000, 8_000)
ONE_SENTENCE = str.maketrans(".!?", ",,,")

COLUMNS = [
    ("text", "text"),
    ("n_chars", "characters"),
    ("delta_chars", "delta size"),
    ("deltas", "deltas"),
    ("runs", "runs"),
    ("seconds", "time (s)"),
    ("ns_per_char", "ns per character"),
    ("deltas_per_s", "deltas/s"),
]


def repeats_for(n_chars: int, quick: bool) -> int:
    """Fewer repeats for the long runs (a 1M-character run takes seconds)."""
    if quick:
        return 2
    return 5 if n_chars <= 100_000 else 3


async def measure(
    n_chars: int, delta_size: int, repeats: int, *, one_sentence: bool = False
) -> dict[str, Any]:
    """Time *repeats* pipeline runs of one length and delta size (of prose, or of one sentence)."""
    text = make_text(n_chars)
    if one_sentence:
        text = text.translate(ONE_SENTENCE)
    deltas = split_deltas(text, delta_size)
    requirements = [NoOpRequirement() for _ in range(3)]
    seconds: list[float] = []
    for _ in range(repeats):
        elapsed, (generation, _, completed) = await timed(lambda: run_ours(deltas, requirements))
        if not completed or generation.deltas_sent != len(deltas):
            raise RuntimeError(
                f"the {n_chars:,}-character run did not complete "
                f"({generation.deltas_sent} of {len(deltas)} deltas sent)"
            )
        seconds.append(elapsed)
    return {
        "text": "one sentence" if one_sentence else "prose",
        "n_chars": n_chars,
        "delta_chars": delta_size,
        "deltas": len(deltas),
        "runs": repeats,
        "seconds": summarize(seconds),
        "ns_per_char": summarize([1e9 * s / n_chars for s in seconds]),
        "deltas_per_s": summarize([len(deltas) / s for s in seconds]),
        "samples": seconds,
    }


def main(args: argparse.Namespace) -> None:
    sizes = QUICK_SIZES if args.quick else SIZES

    async def run() -> list[dict[str, Any]]:
        rows = []
        for delta_size in DELTA_SIZES:
            for n_chars in sizes:
                rows.append(await measure(n_chars, delta_size, repeats_for(n_chars, args.quick)))
        for n_chars in long_chunk_sizes:
            rows.append(await measure(n_chars, 1, repeats_for(n_chars, args.quick), one_sentence=True))
        return rows

    long_chunk_sizes = QUICK_LONG_CHUNK_SIZES if args.quick else LONG_CHUNK_SIZES
    rows = run_async(run)
    fits: dict[str, float] = {}
    series = [(str(size), "prose", size) for size in DELTA_SIZES] + [("1, one sentence", "one sentence", 1)]
    for key, text, delta_size in series:
        mine = [r for r in rows if r["delta_chars"] == delta_size and r["text"] == text]
        fits[key] = loglog_slope([r["n_chars"] for r in mine], [r["seconds"]["median"] for r in mine])
    largest = [
        r for r in rows if r["n_chars"] == max(sizes) and r["delta_chars"] == 1 and r["text"] == "prose"
    ]
    notes = [
        "Median [min, max] over the runs; sentence chunking, three no-op requirements, events consumed. "
        "Text 'one sentence': the prose with '.', '!' and '?' replaced by ',', so the whole output is "
        "one chunk, withheld until the end.",
        "Exponent of time against length (least squares on log-log; 1.0 = linear): "
        + ", ".join(f"{key}-char deltas {fits[key]:.3f}" for key, _, _ in series)
        + ".",
        "Target: linear, and 1,000,000 characters in 1-character deltas in under 10 s"
        + (f" (measured {largest[0]['seconds']['median']:.2f} s)." if largest and not args.quick else "."),
    ]
    write_result(
        "long_output",
        title="Long outputs: time against length",
        columns=COLUMNS,
        rows=[{k: v for k, v in row.items() if k != "samples"} for row in rows],
        params={
            "sizes": list(sizes),
            "delta_sizes": list(DELTA_SIZES),
            "one_sentence_sizes": list(long_chunk_sizes),
            "requirements": 3,
        },
        notes=notes,
        quick=args.quick,
        out=args.out,
        extra={
            "loglog_slope": fits,
            "samples": [[r["text"], r["n_chars"], r["delta_chars"], r["samples"]] for r in rows],
        },
    )


if __name__ == "__main__":
    main(parse_args(__doc__ or ""))
