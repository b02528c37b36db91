"""Smoke runs of the benchmark scripts' ``--quick`` modes, and the harness helpers.

Each script runs in a child interpreter (as ``make bench`` runs it) with tiny sizes;
the test checks it exits cleanly and writes a result of the documented shape. The
Mellea side-by-side (needs the Mellea virtualenv) and the HTTP benchmark (owned and
tested elsewhere) are not run here. No timing is asserted.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import _harness  # noqa: E402

SCRIPTS = ("cancel_latency", "throughput", "long_output", "fanout")


def start_script(name: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-W", "error::ResourceWarning", str(BENCH / f"{name}.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[str, Any], str]]:
    """Run every script's quick mode once (all at once); map name -> (JSON document, stdout)."""
    out_dir = tmp_path_factory.mktemp("bench")
    procs = {name: start_script(name, "--quick", "--out", str(out_dir / f"{name}.json")) for name in SCRIPTS}
    results = {}
    for name, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=120)
        finally:
            if proc.returncode is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, f"{name}.py --quick failed:\n{stdout}\n{stderr}"
        for bad in ("Task was destroyed", "was never awaited", "Traceback"):
            assert bad not in stderr, f"{name}.py --quick: {bad!r} in stderr:\n{stderr}"
        results[name] = (json.loads((out_dir / f"{name}.json").read_text()), stdout)
    return results


@pytest.mark.parametrize("name", SCRIPTS)
def test_quick_mode_writes_documented_shape(name: str, quick_results: dict[str, Any]) -> None:
    doc, stdout = quick_results[name]
    assert doc["schema"] == _harness.SCHEMA_VERSION
    assert doc["benchmark"] == name
    assert doc["quick"] is True
    assert isinstance(doc["title"], str) and doc["title"]
    assert doc["environment"]["python"]
    keys = [key for key, _heading in doc["columns"]]
    assert keys and all(len(pair) == 2 for pair in doc["columns"])
    assert doc["rows"], f"{name} wrote no rows"
    for row in doc["rows"]:
        assert set(keys) <= set(row), f"{name} row lacks columns {set(keys) - set(row)}"
    # The printed table is the same table.
    assert f"## {doc['title']}" in stdout
    assert "| " + " | ".join(heading for _key, heading in doc["columns"]) + " |" in stdout


def _is_summary(value: Any) -> bool:
    return isinstance(value, dict) and {"median", "min", "max", "n"} <= set(value) and value["n"] >= 1


def test_cancel_latency_quick_measures_every_interval(quick_results: dict[str, Any]) -> None:
    doc, _ = quick_results["cancel_latency"]
    assert [row["interval_ms"] for row in doc["rows"]] == [0.0, 1.0, 20.0]
    for row in doc["rows"]:
        latency = row["verdict_to_cancelled_us"]
        assert _is_summary(latency) and 0 < latency["min"] <= latency["median"] <= latency["max"]
        assert _is_summary(row["deltas_after_verdict"]) and row["deltas_after_verdict"]["min"] >= 0
        # The verdict came before the source ran out: the generation really was cut short.
        assert row["deltas_at_verdict"]["max"] > 0


def test_throughput_quick_compares_with_the_floor(quick_results: dict[str, Any]) -> None:
    doc, _ = quick_results["throughput"]
    assert {row["delta_chars"] for row in doc["rows"]} == {1, 4}
    for row in doc["rows"]:
        assert _is_summary(row["ours_deltas_per_s"]) and _is_summary(row["floor_deltas_per_s"])
        assert row["ratio_to_floor"]["median"] > 0
        assert row["events"] > 0


def test_long_output_quick_fits_both_delta_sizes(quick_results: dict[str, Any]) -> None:
    doc, _ = quick_results["long_output"]
    assert set(doc["loglog_slope"]) == {"1", "4"}
    assert all(math.isfinite(slope) for slope in doc["loglog_slope"].values())
    assert {(row["n_chars"], row["delta_chars"]) for row in doc["rows"]} == {
        (n, d) for n in (2_000, 8_000) for d in (1, 4)
    }


def test_fanout_quick_runs_every_stream_without_error(quick_results: dict[str, Any]) -> None:
    doc, _ = quick_results["fanout"]
    assert [row["streams"] for row in doc["rows"]] == [50, 200]
    for row in doc["rows"]:
        assert row["errors"] == 0, row["first_error"]
        assert row["rss_kib_per_stream"]["n"] == 1
        assert row["traced_kib_per_stream"] > 0


def test_render_writes_readme_with_every_table(quick_results: dict[str, Any], tmp_path: Path) -> None:
    for name, (doc, _) in quick_results.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))
    proc = subprocess.run(
        [sys.executable, str(BENCH / "render.py"), "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    readme = (tmp_path / "README.md").read_text()
    for doc, _ in quick_results.values():
        assert f"## {doc['title']}" in readme
    assert "Quick (smoke) runs" in readme
    assert "## Targets (issue 5)" in readme


# -- harness helpers --------------------------------------------------------------------


def test_make_text_is_exact_and_deterministic() -> None:
    text = _harness.make_text(5_000, seed=3)
    assert len(text) == 5_000
    assert text == _harness.make_text(5_000, seed=3)
    assert text.count(". ") >= 5_000 // 140


def test_split_deltas_round_trips() -> None:
    text = _harness.make_text(1_001)
    deltas = _harness.split_deltas(text, 4)
    assert "".join(deltas) == text
    assert {len(d) for d in deltas[:-1]} == {4} and len(deltas[-1]) == 1
    with pytest.raises(ValueError, match="delta size"):
        _harness.split_deltas(text, 0)


def test_sentence_prefix_deltas_counts_up_to_the_sentence() -> None:
    deltas, count = _harness.sentence_prefix_deltas(2, 4)
    text = "".join(deltas)
    prefix = "".join(deltas[:count])
    assert prefix.count(". ") >= 2 > "".join(deltas[: count - 1]).count(". ")
    assert len(text) > len(prefix)


def test_summarize_and_ratio() -> None:
    assert _harness.summarize([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert _harness.summarize([])["n"] == 0
    assert _harness.ratio({"median": 1.0}, {"median": 4.0}) == 0.25
    assert math.isnan(_harness.ratio({"median": 1.0}, {"median": 0.0}))


def test_alternate_flips_the_order_each_repeat() -> None:
    assert list(_harness.alternate(3, ["a", "b"])) == [
        (0, "a"),
        (0, "b"),
        (1, "b"),
        (1, "a"),
        (2, "a"),
        (2, "b"),
    ]


def test_loglog_slope_recognises_linear_and_quadratic() -> None:
    xs = [1e4, 1e5, 1e6]
    assert _harness.loglog_slope(xs, [x * 3e-6 for x in xs]) == pytest.approx(1.0)
    assert _harness.loglog_slope(xs, [x * x for x in xs]) == pytest.approx(2.0)
