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

ORDER = (
    "cancel_latency",
    "http_cancel",
    "throughput",
    "long_output",
    "vs_mellea",
    "fanout",
    "fanout_paced",
    "paced_cpu",
    "http_fanout",
    "scheduling",
    "gateway",
)
PLOT_NAME = "long_output.png"
MELLEA_CURVES = (("mellea-0.7.0", "Mellea 0.7.0", "C3", "^"), ("mellea-0.8.0", "Mellea 0.8.0", "C4", "D"))


class MixedRuns(SystemExit):
    """The result files do not all come from one commit: one table would mix code versions."""


def load(results: Path) -> dict[str, dict[str, Any]]:
    """Every result document in *results*, by benchmark name, in the report's order.

    Refuses (:class:`MixedRuns`) files that do not all record the same commit: the README
    describes one version of the code, so every figure in it must come from that version.
    """
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(results.glob("*.json")):
        doc = json.loads(path.read_text())
        docs[str(doc.get("benchmark", path.stem))] = doc
    commits = {name: doc.get("environment", {}).get("commit") for name, doc in docs.items()}
    if len(set(commits.values())) > 1 or None in commits.values():
        listed = "\n".join(
            f"  {name}.json: {commit or 'no commit recorded'}" for name, commit in commits.items()
        )
        raise MixedRuns(
            f"{results}: the results come from different commits (or record none), so they cannot share "
            f"one table:\n{listed}\nRe-run `make bench` (or the stale scripts) on one commit."
        )
    ordered = {name: docs.pop(name) for name in ORDER if name in docs}
    ordered.update(docs)
    return ordered


def _median(value: Any) -> float:
    if isinstance(value, dict):
        return float(value.get("median", math.nan))
    return float(value) if isinstance(value, int | float) else math.nan


def _le(value: float, bound: float) -> bool | None:
    """value <= bound, or None (not measured) when value is NaN."""
    return None if math.isnan(value) else value <= bound


def _all(checks: list[bool | None]) -> bool | None:
    known = [c for c in checks if c is not None]
    return all(known) if known else None


def targets(docs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The issues' targets, each with what was measured and whether it is met."""
    out: list[dict[str, Any]] = []

    def add(target: str, measured: str, met: bool | None) -> None:
        out.append({"target": target, "measured": measured, "met": "n/a" if met is None else met})

    cancel = docs.get("cancel_latency")
    if cancel and cancel["rows"] and "vs_task_cancel" in cancel["rows"][0]:
        rows = cancel["rows"]
        at_once = [r for r in rows if r["validator"] == "answers at once"]
        awaits = [r for r in rows if r["validator"] == "awaits once"]
        for key, name in (("vs_mellea_07", "Mellea 0.7.0"), ("vs_mellea_08", "Mellea 0.8.0")):
            add(
                f"cancel, a check that answers at once: ≤ 0.25x {name} at 0, 1 and 20 ms",
                "; ".join(f"{r['interval_ms']:g} ms: {fmt(r[key])}x" for r in at_once),
                _all([_le(r[key], 0.25) for r in at_once]),
            )
        add(
            "cancel, a check that awaits once: ≤ 1.0x the task-cancel floor",
            "; ".join(f"{r['interval_ms']:g} ms: {fmt(r['vs_task_cancel'])}x" for r in awaits),
            _all([_le(r["vs_task_cancel"], 1.0) for r in awaits]),
        )
    http = docs.get("http_cancel")
    if http:
        key = next((k for k, _ in http["columns"] if "server" in k and "p99" not in k), None)
        if key is not None:
            values = [
                (r.get("backend", "?"), r.get("interval_ms", "?"), _median(r[key])) for r in http["rows"]
            ]
            add(
                "cancel over HTTP: verdict → server saw disconnect, median < 1 ms",
                ", ".join(f"{b} {i:g} ms: {fmt(v)} µs" for b, i, v in values),
                all(v < 1000 for _, _, v in values),
            )
    throughput = docs.get("throughput")
    if throughput:
        ratios = [(r["delta_chars"], _median(r["ratio_to_floor"])) for r in throughput["rows"]]
        add(
            "throughput ≥ 0.85x the plain-asyncio floor",
            ", ".join(f"{d}-char deltas: {fmt(v)}" for d, v in ratios),
            all(v >= 0.85 for _, v in ratios),
        )
    long_output = docs.get("long_output")
    if long_output and not long_output.get("quick"):
        big = [
            r
            for r in long_output["rows"]
            if r["n_chars"] == 1_000_000 and r["delta_chars"] == 1 and r.get("text", "prose") == "prose"
        ]
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
    vs = docs.get("vs_mellea")
    speedups = (vs or {}).get("speedup_at_largest") or {}
    if vs and vs.get("long_output_curve") and isinstance(speedups, dict):
        n_chars = vs["long_output_curve"][-1]["n_chars"]
        s08 = speedups.get("mellea-0.8.0", math.nan)
        add(
            "160k characters ≥ 2x faster than Mellea 0.8.0",
            f"at {n_chars:,} characters: "
            + ", ".join(f"{s:,.1f}x faster than {e}" for e, s in speedups.items()),
            (s08 >= 2 if not math.isnan(s08) else None) if n_chars >= 160_000 else None,
        )
    fanout = docs.get("fanout")
    if fanout:
        rows = {r["streams"]: r for r in fanout["rows"] if r.get("engine", "rxllm") == "rxllm"}
        if 5_000 in rows:
            add(
                "5,000 concurrent streams without error",
                f"{rows[5_000]['errors']} errors",
                rows[5_000]["errors"] == 0,
            )
        scaling = fanout.get("scaling")
        if scaling:
            small, large = scaling["streams"]
            add(
                f"unpaced fan-out: {large:,} streams ≤ {scaling['target_ratio']:g}x the time of {small:,}",
                f"{scaling['wall_ratio']:.2f}x"
                + (
                    f" (plain-asyncio floor in the same run: {scaling['floor_wall_ratio']:.2f}x)"
                    if "floor_wall_ratio" in scaling
                    else ""
                ),
                scaling["wall_ratio"] <= scaling["target_ratio"],
            )
    paced = docs.get("fanout_paced")
    if paced:
        sweep = [r for r in paced["rows"] if r["source"] == "scripted" and r["gc_setting"] == "default"]
        largest = paced.get("largest_streams_under_target", 0)
        add(
            "paced fan-out: p99 delta → ChunkEvent < 10 ms at ≥ 2,000 streams",
            f"largest N under 10 ms: {largest:,}; "
            + ", ".join(f"{r['streams']:,}: {fmt(r['delay_p99_ms'])} ms" for r in sweep),
            largest >= 2_000,
        )
        memory = [r for r in sweep if r["streams"] >= 1_000] or sweep
        listed = ", ".join(
            f"{r['streams']:,}: RSS {fmt(r['rss_kib_per_stream'])}, traced {fmt(r['traced_kib_per_stream'])}"
            for r in memory
        )
        add(
            "paced fan-out: memory ≤ 20 KiB per stream, Python heap (tracemalloc)",
            listed,
            _all([_le(r["traced_kib_per_stream"], 20) for r in memory]),
        )
        add(
            "paced fan-out: memory ≤ 20 KiB per stream, resident set (RSS)",
            listed,
            _all([_le(r["rss_kib_per_stream"], 20) for r in memory]),
        )
        biggest = sweep[-1] if sweep else None
        if biggest is not None:
            add(
                f"paced fan-out: {biggest['streams']:,} streams run with no error (target: 10,000)",
                f"{biggest['errors']} errors, {biggest['unfinished']} unfinished"
                + (", the process did not exit" if biggest.get("exit_hung") else ""),
                (biggest["errors"] == 0 and biggest["unfinished"] == 0 and not biggest.get("exit_hung"))
                if biggest["streams"] >= 10_000
                else None,
            )
    paced_cpu = docs.get("paced_cpu")
    if paced_cpu:
        pipeline = [r for r in paced_cpu["rows"] if r["side"] == "pipeline"]
        add(
            "paced CPU per delta ≤ 1.6x the paced-source floor in the same run (fixed offered load)",
            ", ".join(f"{r['streams']:,}: {fmt(r['ratio_to_floor'])}x" for r in pipeline),
            _all([_le(r["ratio_to_floor"], 1.6) for r in pipeline]),
        )
    http_fanout = docs.get("http_fanout")
    if http_fanout:
        largest = http_fanout["largest_streams_under_target"]
        floor, ours = largest.get("floor/asyncio", 0), largest.get("rxllm/asyncio", 0)
        add(
            "HTTP fan-out without uvloop: ≥ 0.8x the raw aiohttp floor's streams at p99 < 10 ms",
            ", ".join(f"{k} {v:,}" for k, v in largest.items()),
            ours >= 0.8 * floor if floor else None,
        )
        by_side = {(r["side"], r["loop"], r["streams"]): r for r in http_fanout["rows"]}
        ratios = [
            r["rss_kib_per_stream"] / f["rss_kib_per_stream"]
            for (side, loop, n), r in by_side.items()
            if side == "rxllm" and loop == "asyncio" and (f := by_side.get(("floor", loop, n)))
        ]
        add(
            "HTTP fan-out: RSS per stream ≤ 1.3x the floor's",
            ", ".join(f"{fmt(x)}x" for x in ratios),
            _all([_le(x, 1.3) for x in ratios]),
        )
    scheduling = docs.get("scheduling")
    if scheduling:
        by_mode: dict[str, list[dict[str, Any]]] = {}
        for r in scheduling["rows"]:
            by_mode.setdefault(r["mode"], []).append(r)
        add(
            "slow validator: failure detected without waiting for the judge",
            "; ".join(
                f"{r['text']}, {mode}: lag {fmt(_median(r['detect_lag_ms']))} ms, "
                f"{fmt(_median(r['tokens_after']))} tokens after"
                for mode, rs in by_mode.items()
                for r in rs
            ),
            None,
        )
    served = docs.get("gateway")
    if served:
        largest = served["largest_streams_under_target"]
        scaling = float(served["scaling_two_workers"])
        add(
            "gateway: 2 workers ≥ 1.7x the streams of one at p99 < 10 ms, where cores are free",
            f"one worker {largest['one_worker']:,}, two {largest['two_workers']:,} streams "
            + (f"({fmt(scaling)}x; " if not math.isnan(scaling) else "(no ratio: one worker held none; ")
            + f"direct {largest['direct']:,}); see the gateway notes for the cores taken "
            "by the load generator and the upstream",
            None if math.isnan(scaling) else scaling >= 1.7,
        )
        dropped = served["disconnect_to_upstream_close_ms"]
        add(
            "gateway: client disconnect → upstream connection closed, measured",
            f"p50 {fmt(dropped['p50'])} ms, p99 {fmt(dropped['p99'])} ms ({dropped['n']} runs)",
            dropped["n"] > 0,
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
            rows = [
                r
                for r in long_output["rows"]
                if r["delta_chars"] == delta and r.get("text", "prose") == "prose"
            ]
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
        for key, label, color, marker in MELLEA_CURVES:
            if f"{key}_s" not in curve[0]:
                continue
            ys = [c[f"{key}_s"] for c in curve]
            left.plot(xs, ys, marker=marker, color=color, label=f"{label}, 4-char deltas")
            right.plot(
                xs,
                [1e9 * y / x for x, y in zip(xs, ys, strict=True)],
                marker=marker,
                color=color,
                label=label,
            )
        if "rxllm_s" in curve[0]:
            left.plot(
                xs,
                [c["rxllm_s"] for c in curve],
                marker="v",
                linestyle="--",
                color="C1",
                alpha=0.6,
                label="rxllm, 4-char deltas (same run as Mellea)",
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
        "comparison is a ratio measured in one run, alternating the sides (engines that cannot share "
        "an interpreter run in one worker process each, driven in turn by one script).",
        "",
    ]
    envs = [doc.get("environment", {}) for doc in docs.values()]
    if envs:
        env = envs[0]
        starts = sorted(e.get("started_utc", e.get("date_utc", "?")) for e in envs)
        ends = sorted(e.get("date_utc", "?") for e in envs)
        engines: dict[str, dict[str, str]] = {}
        for e in envs:
            engines.update(e.get("engines", {}))
        versions = "; ".join(
            f"{engine}: " + ", ".join(f"{k} {v}" for k, v in sorted(found.items()))
            for engine, found in sorted(engines.items())
        )
        clean = all(e.get("tree_clean") for e in envs)
        lines += [
            f"Commit `{env.get('commit')}`"
            + ("" if clean else " **with uncommitted changes**")
            + f", measured {starts[0]} to {ends[-1]} UTC on {env.get('platform', '?')}, "
            f"{env.get('cpus', '?')} CPUs, {env.get('implementation', 'Python')} {env.get('python', '?')}. "
            "The machine is shared, so read absolute figures as indicative and ratios as the result.",
            "",
            f"Versions, as each engine's own worker reported them: {versions}." if versions else "",
            "",
        ]
        durations = [
            (name, doc["environment"]["duration_s"])
            for name, doc in docs.items()
            if "duration_s" in doc.get("environment", {})
        ]
        if durations:
            lines += [
                "Run time per script: "
                + ", ".join(f"{name} {seconds / 60:.1f} min" for name, seconds in durations)
                + f"; {sum(s for _, s in durations) / 60:.1f} min in all.",
                "",
            ]
    quick = [name for name, doc in docs.items() if doc.get("quick")]
    if quick:
        lines += [f"**Quick (smoke) runs, not measurements:** {', '.join(quick)}.", ""]
    goal_rows = targets(docs)
    if goal_rows:
        lines += [
            "## Targets",
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
