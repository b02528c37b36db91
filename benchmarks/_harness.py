"""Shared harness for the benchmark scripts: workloads, statistics, timing runs, JSON and tables.

Not a benchmark itself (the leading underscore keeps it out of ``make bench``). It
imports only the standard library and this project, so the Mellea side-by-side
script can use it from the separate Mellea virtualenv too.

Conventions every script follows:

- Figures are medians with min and max over repeated runs (:func:`summarize`).
- A comparison between two sides is measured in one process run, alternating the
  sides on every repeat (:func:`alternate`), and reported as the ratio of medians.
- Each script prints a table and writes ``benchmarks/results/<name>.json`` (or the
  path given with ``--out``) through :func:`write_result`; ``render.py`` turns those
  files into ``benchmarks/results/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SCHEMA_VERSION = 1

# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options every script takes: ``--quick`` (a few-second smoke run) and ``--out PATH``."""
    parser = argparse.ArgumentParser(description=description.strip().split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and few repeats: checks the script runs, the figures mean little",
    )
    parser.add_argument("--out", type=Path, default=None, help="where to write the JSON result")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------
# workloads
# ---------------------------------------------------------------------------

_PROSE = (
    "the model streams tokens while every requirement checks each sentence as soon as it "
    "arrives and a failing verdict stops the generation at once so nothing is wasted on "
    "output that will be thrown away reactive pipelines compose chunking validation and "
    "cancellation into one observable"
)
_WORDS = tuple(_PROSE.split())


def make_text(n_chars: int, *, seed: int = 0) -> str:
    """Deterministic English-like prose of exactly *n_chars* characters.

    Sentences of 6 to 18 words end with ``". "``, so sentence chunking finds a
    boundary every ~60 to ~130 characters, as in real model output.
    """
    rng = random.Random(seed)
    parts: list[str] = []
    size = 0
    while size < n_chars:
        words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 18))]
        sentence = " ".join(words).capitalize() + ". "
        parts.append(sentence)
        size += len(sentence)
    return "".join(parts)[:n_chars]


def split_deltas(text: str, size: int) -> list[str]:
    """Cut *text* into deltas of *size* characters (the last may be shorter)."""
    if size < 1:
        raise ValueError(f"delta size must be >= 1 character, got {size}")
    return [text[i : i + size] for i in range(0, len(text), size)]


def sentence_prefix_deltas(n_sentences: int, delta_size: int, *, seed: int = 1) -> tuple[list[str], int]:
    """Deltas whose text has at least *n_sentences* full sentences, and the delta count up to them.

    Used by cancel-latency runs: the requirement fails on sentence *n_sentences*;
    the text continues well past it so the source is still producing when the
    verdict arrives.
    """
    text = make_text(4000, seed=seed)
    end = 0
    for _ in range(n_sentences):
        end = text.index(". ", end) + 2
    deltas = split_deltas(text, delta_size)
    return deltas, math.ceil(end / delta_size)


# ---------------------------------------------------------------------------
# statistics and timing
# ---------------------------------------------------------------------------


def summarize(values: Sequence[float]) -> dict[str, float | int]:
    """Median, min, max and count of *values* (empty input gives NaNs and n=0)."""
    if not values:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def ratio(numerator: dict[str, Any], denominator: dict[str, Any]) -> float:
    """Ratio of two summaries' medians (NaN if the denominator is 0 or missing)."""
    den = denominator.get("median", math.nan)
    if not den or math.isnan(den):
        return math.nan
    return float(numerator["median"]) / float(den)


def alternate(repeats: int, sides: Sequence[str]) -> Iterator[tuple[int, str]]:
    """``(repeat, side)`` pairs: every repeat runs every side, the order flipping each repeat."""
    for i in range(repeats):
        order = list(sides) if i % 2 == 0 else list(reversed(sides))
        for side in order:
            yield i, side


async def timed(run: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    """Collect garbage, then time one awaited run with ``perf_counter``: ``(seconds, result)``."""
    gc.collect()
    start = time.perf_counter()
    value = await run()
    return time.perf_counter() - start, value


def run_async(main: Callable[[], Awaitable[Any]]) -> Any:
    """``asyncio.run`` on a fresh loop (no debug mode: ``-X dev`` would slow every callback)."""
    return asyncio.run(main(), debug=False)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# results: JSON and tables
# ---------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    """Where the figures were measured."""
    versions: dict[str, str] = {}
    for name in ("reactivex", "aiohttp", "mellea"):
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:
            continue
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "packages": versions,
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }


def fmt(value: Any) -> str:
    """Format one table cell: floats to 3 significant digits, summaries as ``median [min, max]``."""
    if isinstance(value, dict) and "median" in value:
        if value.get("n", 1) == 0:
            return "n/a"
        if value.get("n", 1) == 1:
            return fmt(value["median"])
        return f"{fmt(value['median'])} [{fmt(value['min'])}, {fmt(value['max'])}]"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if value == 0:
            return "0"
        magnitude = abs(value)
        if magnitude >= 1000:
            return f"{value:,.0f}"
        if magnitude >= 100:
            return f"{value:.0f}"
        if magnitude >= 10:
            return f"{value:.1f}"
        if magnitude >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_table(columns: Sequence[tuple[str, str]], rows: Sequence[dict[str, Any]]) -> str:
    """A GitHub markdown table: *columns* are ``(key, heading)`` pairs, *rows* dicts by key."""
    lines = [
        "| " + " | ".join(heading for _, heading in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(key, "")) for key, _ in columns) + " |")
    return "\n".join(lines)


def write_result(
    name: str,
    *,
    title: str,
    columns: Sequence[tuple[str, str]],
    rows: Sequence[dict[str, Any]],
    params: dict[str, Any],
    notes: Sequence[str] = (),
    quick: bool = False,
    out: Path | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Print the table and write the JSON result; return the path written.

    The JSON holds everything ``render.py`` needs: ``benchmark``, ``title``,
    ``columns`` (``[key, heading]`` pairs), ``rows``, ``params``, ``notes``,
    ``environment``, ``quick``, plus any *extra* keys (raw samples, fits).
    """
    doc: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "benchmark": name,
        "title": title,
        "quick": quick,
        "environment": environment(),
        "params": params,
        "columns": [list(c) for c in columns],
        "rows": list(rows),
        "notes": list(notes),
    }
    if extra:
        doc.update(extra)
    path = out if out is not None else RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=_json_default, allow_nan=True) + "\n")
    tmp.replace(path)
    print(f"\n## {title}\n")
    print(markdown_table(columns, rows))
    for note in notes:
        print(f"\n- {note}")
    print(f"\nwrote {path}", file=sys.stderr)
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to the result JSON")


def us(seconds: float) -> float:
    """Seconds to microseconds."""
    return seconds * 1e6


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log(y) against log(x): 1.0 means y grows linearly with x."""
    if len(xs) < 2:
        return math.nan
    lx = [math.log(x) for x in xs]
    ly = [math.log(y) for y in ys]
    mx = statistics.fmean(lx)
    my = statistics.fmean(ly)
    num = sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True))
    den = sum((a - mx) ** 2 for a in lx)
    return num / den if den else math.nan
