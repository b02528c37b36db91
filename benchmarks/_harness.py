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
- Engines that cannot share an interpreter (this project, Mellea 0.7.0, Mellea 0.8.0:
  two Mellea versions cannot be imported in one process) are driven side by side
  through :class:`Worker`: one persistent child interpreter per engine, each running
  ``_worker.py`` in its own virtualenv; the orchestrating script sends one command at
  a time, alternating the engines round by round, so only one engine runs at any moment.
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
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
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
    parser.add_argument(
        "--engines",
        default=None,
        help="comma-separated engines for side-by-side scripts (rxllm, mellea-0.7.0, mellea-0.8.0); "
        "default: every engine whose virtualenv exists",
    )
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


def percentile(values: Sequence[float], q: float) -> float:
    """The *q*-quantile (0..1) of *values* by the nearest-rank method (NaN when empty)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


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
# engines in their own interpreters
# ---------------------------------------------------------------------------

RXLLM = "rxllm"
MELLEA_07 = "mellea-0.7.0"
MELLEA_08 = "mellea-0.8.0"
ENGINES = (RXLLM, MELLEA_07, MELLEA_08)
# Engine -> adapter module run by _worker.py, and the venv of its interpreter. rxllm runs in the
# interpreter running the orchestrating script (the project venv); each Mellea in the venv `make
# bench` builds. Both Mellea versions run _mellea, which follows the version installed beside it.
_ADAPTERS = {RXLLM: "_ours", MELLEA_07: "_mellea", MELLEA_08: "_mellea"}
_VENVS = {MELLEA_07: BENCH_DIR / ".mellea-venv", MELLEA_08: BENCH_DIR / ".mellea08-venv"}


def engine_python(engine: str) -> Path | None:
    """The interpreter that runs *engine*'s worker, or None if its virtualenv is not built."""
    if engine == RXLLM:
        return Path(sys.executable)
    python = _VENVS[engine] / "bin" / "python"
    return python if python.exists() else None


def select_engines(spec: str | None) -> tuple[list[str], list[str]]:
    """``(engines to run, notes)`` for an ``--engines`` value (None: every engine that is built)."""
    wanted = list(ENGINES) if spec is None else [e.strip() for e in spec.split(",") if e.strip()]
    unknown = [e for e in wanted if e not in ENGINES]
    if unknown:
        raise SystemExit(f"unknown engine(s) {unknown}; choose from {', '.join(ENGINES)}")
    chosen: list[str] = []
    notes: list[str] = []
    for engine in wanted:
        if engine_python(engine) is None:
            message = (
                f"{engine} not measured: its virtualenv {_VENVS[engine]} is missing (`make bench` builds it)"
            )
            if spec is not None:
                raise SystemExit(message)
            print(f"note: {message}", file=sys.stderr)
            notes.append(message + ".")
        else:
            chosen.append(engine)
    return chosen, notes


class Worker:
    """One engine's persistent child interpreter, answering one JSON command at a time.

    The child runs ``_worker.py ADAPTER``: it reads ``{"op": ..., "args": {...}}`` lines,
    runs ``ADAPTER.OPS[op](**args)`` on a fresh event loop, and answers one JSON line.
    Between commands it waits on its stdin, so it takes no CPU from the engine measured.
    The child's ``engine`` op must name *engine* (a venv that holds another Mellea version
    fails here rather than measure under the wrong name).
    """

    def __init__(self, engine: str) -> None:
        python = engine_python(engine)
        if python is None:
            raise RuntimeError(f"{engine}: virtualenv missing; run `make bench` (it builds it)")
        self.engine = engine
        self._proc = subprocess.Popen(
            [str(python), str(BENCH_DIR / "_worker.py"), _ADAPTERS[engine]],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(BENCH_DIR),
        )
        try:
            serves = self.call("engine")
        except BaseException:
            self.close()
            raise
        if serves != engine:
            self.close()
            raise RuntimeError(f"the {engine} worker runs {serves}: rebuild its virtualenv (`make bench`)")
        ENGINE_VERSIONS[engine] = self.call("versions")

    def call(self, op: str, **args: Any) -> Any:
        """Run *op* in the child and return its result; a failure there is raised here."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.engine} worker exited (code {self._proc.wait()}) during {op}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.engine} worker failed in {op}({args}):\n{answer['error']}")
        return answer["result"]

    def close(self) -> None:
        """Ask the child to exit and wait for it."""
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------
# results: JSON and tables
# ---------------------------------------------------------------------------


_STARTED = time.time()
_RESULTS_PATHSPEC = ":(exclude)benchmarks/results"
ENGINE_VERSIONS: dict[str, dict[str, str]] = {}
"""Engine -> the versions its own worker reported (:class:`Worker` fills it as it starts one)."""


def package_versions() -> dict[str, str]:
    """The versions of this interpreter's engine packages (the ``versions`` op of every worker)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for name in ("rxllm", "mellea", "reactivex", "aiohttp", "uvloop", "openai"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def source_revision() -> dict[str, Any]:
    """The commit measured and whether the tree held changes beyond it (results files excepted:
    the scripts of one ``make bench`` write them one after another)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=BENCH_DIR.parent, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", _RESULTS_PATHSPEC)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "tree_clean": None}
    return {"commit": commit, "tree_clean": not changed}


def environment() -> dict[str, Any]:
    """Where, when and on what the figures were measured: the commit (and whether the tree was
    clean), the start and end of the run, and every engine's versions (Mellea's from its worker)."""
    engines = {"rxllm": package_versions(), **ENGINE_VERSIONS}
    return {
        **source_revision(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "packages": engines["rxllm"],
        "engines": engines,
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(_STARTED)),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "duration_s": round(time.time() - _STARTED, 1),
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
