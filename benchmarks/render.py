"""Render ``benchmarks/results/README.md`` (every table, the targets) and the long-output plot.

Reads every ``benchmarks/results/*.json`` written by the benchmark scripts (the
``_harness.write_result`` format), writes ``README.md`` beside them and
``long_output.png`` (matplotlib, Agg backend) from ``long_output.json`` and, when
present, Mellea's curve from ``vs_mellea.json``.

Run: ``python benchmarks/render.py [--results DIR]``
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from _harness import RESULTS_DIR, fmt, markdown_table

ORDER = ("cancel_latency", "http_cancel", "throughput", "long_output", "fanout", "vs_mellea")
PLOT_NAME = "long_output.png"


def load(results: Path) -> dict[str, dict[str, Any]]:
    """Every result document in *results*, by benchmark name, in the report's order."""
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(results.glob("*.json")):
        doc = json.loads(path.read_text())
        docs[str(doc.get("benchmark", path.stem))] = doc
    ordered = {name: docs.pop(name) for name in ORDER if name in docs}
    ordered.update(docs)
    return ordered


def _median(value: Any) -> float:
    if isinstance(value, dict):
        return float(value.get("median", math.nan))
    return float(value) if isinstance(value, int | float) else math.nan


def targets(docs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, each with what was measured and whether it is met."""
    out: list[dict[str, Any]] = []

    def add(target: str, measured: str, met: bool | None) -> None:
        out.append({"target": target, "measured": measured, "met": "n/a" if met is None else met})

    cancel = docs.get("cancel_latency")
    if cancel:
        medians = {row["interval_ms"]: _median(row["verdict_to_cancelled_us"]) for row in cancel["rows"]}
        add(
            "cancel latency (a): verdict → task cancelled, median < 100 µs",
            ", ".join(f"{k:g} ms: {fmt(v)} µs" for k, v in medians.items()),
            all(v < 100 for v in medians.values()),
        )
    vs = docs.get("vs_mellea")
    if vs:
        cancel_rows = [r for r in vs["rows"] if r["metric"].startswith("verdict")]
        if cancel_rows:
            add(
                "cancel latency (a): no worse than Mellea (ratio ≤ 1)",
                ", ".join(f"{r['workload'].split(', ')[-1]}: {fmt(r['ratio'])}x" for r in cancel_rows),
                all(r["ratio"] <= 1 for r in cancel_rows),
            )
    http = docs.get("http_cancel")
    if http:
        key = next((k for k, _ in http["columns"] if "server" in k and "p99" not in k), None)
        if key is not None:
            values = [
                (r.get("backend", "?"), r.get("interval_ms", "?"), _median(r[key])) for r in http["rows"]
            ]
            add(
                "cancel latency (b): verdict → server saw disconnect, median < 5 ms",
                ", ".join(f"{b} {i:g} ms: {fmt(v)} µs" for b, i, v in values),
                all(v < 5000 for _, _, v in values),
            )
    throughput = docs.get("throughput")
    if throughput:
        ratios = [(r["delta_chars"], _median(r["ratio_to_floor"])) for r in throughput["rows"]]
        add(
            "throughput ≥ 0.5 x the plain-asyncio floor",
            ", ".join(f"{d}-char deltas: {fmt(v)}" for d, v in ratios),
            all(v >= 0.5 for _, v in ratios),
        )
    long_output = docs.get("long_output")
    if long_output and not long_output.get("quick"):
        big = [r for r in long_output["rows"] if r["n_chars"] == 1_000_000 and r["delta_chars"] == 1]
        slopes = long_output.get("loglog_slope", {})
        if big:
            add(
                "long output: 1M characters in 1-char deltas < 10 s",
                f"{fmt(_median(big[0]['seconds']))} s",
                _median(big[0]["seconds"]) < 10,
            )
        if slopes:
            add(
                "long output: linear (log-log exponent ≈ 1)",
                ", ".join(f"{d}-char deltas: {v:.3f}" for d, v in slopes.items()),
                all(0.85 <= v <= 1.15 for v in slopes.values()),
            )
    if vs and vs.get("long_output_curve"):
        last = vs["long_output_curve"][-1]
        speedup = last["mellea_s"] / last["ours_s"]
        add(
            "long output: ≥ 100x faster than Mellea at 160,000 characters",
            f"{speedup:,.0f}x at {last['n_chars']:,} characters",
            speedup >= 100 if last["n_chars"] >= 160_000 else None,
        )
    fanout = docs.get("fanout")
    if fanout:
        rows = {r["streams"]: r for r in fanout["rows"]}
        if 5_000 in rows:
            add(
                "5,000 concurrent streams without error",
                f"{rows[5_000]['errors']} errors",
                rows[5_000]["errors"] == 0,
            )
    return out


def plot(docs: dict[str, dict[str, Any]], path: Path) -> bool:
    """Draw time against length (log-log) and time per character; False if there is no data."""
    long_output = docs.get("long_output")
    vs = docs.get("vs_mellea")
    if not long_output and not vs:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot drawn")
        return False

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    if long_output:
        for delta, marker in ((1, "o"), (4, "s")):
            rows = [r for r in long_output["rows"] if r["delta_chars"] == delta]
            if not rows:
                continue
            xs = [r["n_chars"] for r in rows]
            ys = [_median(r["seconds"]) for r in rows]
            lows = [ys[i] - r["seconds"]["min"] for i, r in enumerate(rows)]
            highs = [r["seconds"]["max"] - ys[i] for i, r in enumerate(rows)]
            left.errorbar(
                xs, ys, yerr=[lows, highs], marker=marker, capsize=3, label=f"rxllm, {delta}-char deltas"
            )
            right.plot(
                xs,
                [_median(r["ns_per_char"]) for r in rows],
                marker=marker,
                label=f"rxllm, {delta}-char deltas",
            )
            if delta == 1:
                ref = [ys[0] * x / xs[0] for x in xs]
                left.plot(xs, ref, linestyle=":", color="grey", label="linear reference")
    if vs and vs.get("long_output_curve"):
        curve = vs["long_output_curve"]
        xs = [c["n_chars"] for c in curve]
        left.plot(
            xs, [c["mellea_s"] for c in curve], marker="^", color="C3", label="Mellea 0.7.0, 4-char deltas"
        )
        left.plot(
            xs,
            [c["ours_s"] for c in curve],
            marker="v",
            linestyle="--",
            color="C1",
            alpha=0.6,
            label="rxllm, 4-char deltas (same run as Mellea)",
        )
        right.plot(
            xs,
            [1e9 * c["mellea_s"] / c["n_chars"] for c in curve],
            marker="^",
            color="C3",
            label="Mellea 0.7.0",
        )
    left.set(xscale="log", yscale="log", xlabel="output length (characters)", ylabel="time per stream (s)")
    left.set_title("Time against output length")
    right.set(xscale="log", yscale="log", xlabel="output length (characters)", ylabel="ns per character")
    right.set_title("Cost per character (flat = linear)")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        "Sentence chunking, three no-op requirements, events consumed (medians; bars: min to max)", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def render(results: Path) -> Path:
    """Write README.md (and the plot) for the documents in *results*; return the README path."""
    docs = load(results)
    lines = [
        "# Benchmark results",
        "",
        "Generated by `make bench` (`benchmarks/render.py`) from the JSON files in this folder; "
        "re-run it to refresh. Figures are medians with [min, max] over repeated runs; every "
        "comparison is a ratio measured in one process run, alternating the two sides.",
        "",
    ]
    env = next(iter(docs.values()), {}).get("environment", {})
    if env:
        packages = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items())
        lines += [
            f"Measured {env.get('date_utc', '?')} UTC on {env.get('platform', '?')}, "
            f"{env.get('cpus', '?')} CPUs, {env.get('implementation', 'Python')} {env.get('python', '?')}"
            + (f" ({packages})" if packages else "")
            + ". The machine is shared, so read absolute figures as indicative and ratios as the result.",
            "",
        ]
    quick = [name for name, doc in docs.items() if doc.get("quick")]
    if quick:
        lines += [f"**Quick (smoke) runs, not measurements:** {', '.join(quick)}.", ""]
    goal_rows = targets(docs)
    if goal_rows:
        lines += [
            "## Targets (issue 5)",
            "",
            markdown_table([("target", "target"), ("measured", "measured"), ("met", "met")], goal_rows),
            "",
        ]
    if plot(docs, results / PLOT_NAME):
        lines += ["## Long-output curve", "", f"![time against output length]({PLOT_NAME})", ""]
    for name, doc in docs.items():
        columns = [(str(k), str(h)) for k, h in doc.get("columns", [])]
        lines += [f"## {doc.get('title', name)}", "", f"`{name}.json`", ""]
        if columns:
            lines += [markdown_table(columns, doc.get("rows", [])), ""]
        lines += [f"- {note}" for note in doc.get("notes", [])]
        lines.append("")
    readme = results / "README.md"
    readme.write_text("\n".join(lines))
    print(f"wrote {readme}")
    return readme


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description="Render benchmarks/results/README.md and the long-output plot."
    )
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    render(parser.parse_args().results)
