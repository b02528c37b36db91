"""Telemetry overhead: the throughput pipeline with telemetry off against fully on.

The workload of ``throughput.py`` (``stream_with_chunking`` over a scripted backend, one
loop turn per delta, sentence chunking, three no-op requirements, every event consumed),
run with telemetry off and with traces and metrics on through SDK providers with an
in-memory span exporter and metric reader (everything recorded, nothing sent). The two
sides alternate on every repeat in one process; the ratio is, per repeat pair, on time /
off time (median and range: the interval the noise leaves). "Off" is also what a process
without OpenTelemetry installed runs: the engine takes the same path (the hooks are not
called; tests/engine/test_telemetry.py counts the calls).

Time on a shared machine is noisy; the Python calls of one run are not. Each workload also
reports the calls one run makes (``sys.setprofile`` "call" events, the event loop's
included), off and on, and their ratio. The 1-minute load average at the start and the end
is written with the result, so a reader can tell a run on a loaded machine.

Run: ``python benchmarks/telemetry_overhead.py [--quick] [--out PATH]``
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from statistics import median
from typing import Any

from _harness import alternate, make_text, parse_args, run_async, split_deltas, summarize, timed, write_result
from _ours import NoOpRequirement, run_ours
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from engine.core import telemetry

COLUMNS = [
    ("delta_chars", "delta size (chars)"),
    ("deltas", "deltas per run"),
    ("runs", "runs per side"),
    ("off_deltas_per_s", "telemetry off (deltas/s)"),
    ("on_deltas_per_s", "telemetry on, in-memory SDK (deltas/s)"),
    ("on_over_off_time", "on / off time"),
    ("calls_off", "Python calls per run, off"),
    ("calls_on", "Python calls per run, on"),
    ("on_over_off_calls", "on / off Python calls"),
]


def install_sdk() -> tuple[InMemorySpanExporter, InMemoryMetricReader]:
    """SDK providers with in-memory export, set as the global providers (once per process)."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return spans, reader


def switch(side: str) -> None:
    """Telemetry fully on (traces and metrics) or off."""
    if side == "on":
        telemetry.enable(traces=True, metrics=True)
    else:
        telemetry.disable()


async def count_calls(deltas: Sequence[str], requirements: Sequence[Any], side: str) -> int:
    """The Python calls one run makes with telemetry *side* (deterministic, unlike its time)."""
    switch(side)
    calls = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    sys.setprofile(profile)
    try:
        await run_ours(deltas, requirements)
    finally:
        sys.setprofile(None)
    return calls


async def measure(n_chars: int, delta_size: int, repeats: int, spans: InMemorySpanExporter) -> dict[str, Any]:
    """Alternate off and on *repeats* times on one workload."""
    deltas = split_deltas(make_text(n_chars), delta_size)
    requirements = [NoOpRequirement() for _ in range(3)]
    seconds: dict[str, list[float]] = {"off": [], "on": []}
    for _, side in alternate(repeats, ["off", "on"]):
        switch(side)
        elapsed, (_, _, completed) = await timed(lambda: run_ours(deltas, requirements))
        if not completed:
            raise RuntimeError("the run did not complete: a no-op requirement cannot fail")
        seconds[side].append(elapsed)
    calls = {side: await count_calls(deltas, requirements, side) for side in ("off", "on")}
    telemetry.disable()
    if not spans.get_finished_spans():
        raise RuntimeError("telemetry on recorded no span: the 'on' side did not emit")
    spans.clear()
    n = len(deltas)
    pairs = [on / off for off, on in zip(seconds["off"], seconds["on"], strict=True)]
    return {
        "delta_chars": delta_size,
        "deltas": n,
        "runs": repeats,
        "off_deltas_per_s": summarize([n / s for s in seconds["off"]]),
        "on_deltas_per_s": summarize([n / s for s in seconds["on"]]),
        "on_over_off_time": summarize(pairs),
        "calls_off": calls["off"],
        "calls_on": calls["on"],
        "on_over_off_calls": calls["on"] / calls["off"],
        "on_minus_off_us_per_delta": 1e6 * (median(seconds["on"]) - median(seconds["off"])) / n,
        "seconds": seconds,
    }


def main(args: argparse.Namespace) -> None:
    n_chars = 5_000 if args.quick else 200_000
    repeats = 3 if args.quick else 15
    spans, _ = install_sdk()
    load_before = os.getloadavg()[0]

    async def run() -> list[dict[str, Any]]:
        return [await measure(n_chars, size, repeats, spans) for size in (4, 1)]

    rows = run_async(run)
    load = {"load_avg_1min": [load_before, os.getloadavg()[0]], "cpus": os.cpu_count()}
    write_result(
        "telemetry_overhead",
        title="Telemetry overhead: throughput pipeline, off against on (in-memory SDK)",
        columns=COLUMNS,
        rows=[{k: v for k, v in row.items() if k != "seconds"} for row in rows],
        params={"n_chars": n_chars, "requirements": 3, "chunking": "sentence", "repeats": repeats},
        notes=[
            f"{n_chars:,} characters of prose per run, sentence chunking, three no-op requirements, "
            "events consumed; off and on alternate in one process. Ratio: per repeat pair, on time / "
            "off time (median and range).",
            "Python calls: sys.setprofile 'call' events of one run (the event loop's included), "
            "deterministic where time on a shared machine is not.",
            f"1-minute load average {load['load_avg_1min'][0]:.1f} at the start, "
            f"{load['load_avg_1min'][1]:.1f} at the end, on {load['cpus']} CPUs.",
            "Target: on / off at most 1.10.",
        ],
        quick=args.quick,
        out=args.out,
        extra={"seconds": {str(row["delta_chars"]): row["seconds"] for row in rows}, "machine_load": load},
    )


if __name__ == "__main__":
    main(parse_args(__doc__ or ""))
