"""The instruments of rxllm's telemetry: the tracer, the meters, their names and buckets.

:func:`configure` takes them from the global providers when telemetry is switched on;
:func:`active_instruments` is what the run and generation observers record with. The
clock and label helpers turn the engine's values into what spans and metrics want.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import metrics, trace

from engine.core.events import StreamEvent

__all__ = [
    "FAST_CHECK_SECONDS",
    "METRIC_NAMES",
    "SEMCONV_VERSION",
    "Instruments",
    "active_instruments",
    "configure",
    "event_ns",
    "provider_name",
    "requirement_label",
    "unix_ns",
]

SEMCONV_VERSION = "1.37.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"
SCOPE = "rxllm"

# Seconds, from 1 µs up: a failing verdict stops a local producer in microseconds.
FINE_SECONDS = (
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4,
    1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# The GenAI conventions' advice for gen_ai.client.operation.duration.
DURATION_SECONDS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
# The GenAI conventions' advice for time to first token (and per output token).
LATENCY_SECONDS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
DELTA_COUNTS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256)
# A check that finishes faster than this is counted (rxllm.validation.fast), not timed: one
# histogram record costs the SDK about 50 Python calls, as much as such a check itself,
# and a run checks every chunk against every requirement.
FAST_CHECK_SECONDS = 1e-4

METRIC_NAMES = (
    "rxllm.request.duration",
    "rxllm.time_to_first_token",
    "rxllm.time_to_first_chunk",
    "rxllm.time_per_chunk",
    "rxllm.tokens.input",
    "rxllm.tokens.output",
    "rxllm.run.duration",
    "rxllm.validation.duration",
    "rxllm.validation.fast",
    "rxllm.verdicts",
    "rxllm.validation.timeouts",
    "rxllm.verdict_to_stop.duration",
    "rxllm.deltas_after_verdict",
    "rxllm.retries",
    "rxllm.errors",
    "rxllm.streams.active",
)


class Instruments:
    """The tracer and every instrument, from the global providers."""

    def __init__(self, content: bool, chunk_events: bool, traces: bool, metrics_on: bool) -> None:
        self.content = content
        self.chunk_events = chunk_events
        self.traces = traces
        self.metrics = metrics_on
        tracer_provider = trace.get_tracer_provider() if traces else trace.NoOpTracerProvider()
        meter_provider = metrics.get_meter_provider() if metrics_on else metrics.NoOpMeterProvider()
        self.tracer = tracer_provider.get_tracer(SCOPE, _version(), schema_url=SCHEMA_URL)
        meter = meter_provider.get_meter(SCOPE, _version(), schema_url=SCHEMA_URL)
        seconds = "s"
        self.request_duration = meter.create_histogram(
            "rxllm.request.duration",
            unit=seconds,
            description="Duration of one backend request (a generation), start to end.",
            explicit_bucket_boundaries_advisory=DURATION_SECONDS,
        )
        self.time_to_first_token = meter.create_histogram(
            "rxllm.time_to_first_token",
            unit=seconds,
            description="Request start to the first delta received.",
            explicit_bucket_boundaries_advisory=LATENCY_SECONDS,
        )
        self.time_to_first_chunk = meter.create_histogram(
            "rxllm.time_to_first_chunk",
            unit=seconds,
            description="Run start to the first validated chunk delivered.",
            explicit_bucket_boundaries_advisory=LATENCY_SECONDS,
        )
        self.time_per_chunk = meter.create_histogram(
            "rxllm.time_per_chunk",
            unit=seconds,
            description="Mean time between the validated chunks of a run, (last - first) / (chunks - 1): "
            "one value per run of two chunks or more.",
            explicit_bucket_boundaries_advisory=LATENCY_SECONDS,
        )
        self.tokens_input = meter.create_counter(
            "rxllm.tokens.input", unit="{token}", description="Input tokens the backend reported."
        )
        self.tokens_output = meter.create_counter(
            "rxllm.tokens.output", unit="{token}", description="Output tokens the backend reported."
        )
        self.run_duration = meter.create_histogram(
            "rxllm.run.duration",
            unit=seconds,
            description="Duration of a streaming run, start to its CompletedEvent.",
            explicit_bucket_boundaries_advisory=DURATION_SECONDS,
        )
        self.validation_duration = meter.create_histogram(
            "rxllm.validation.duration",
            unit=seconds,
            description="Duration of one requirement's check of one chunk, for checks that took "
            "100 µs or longer (faster ones are counted in rxllm.validation.fast).",
            explicit_bucket_boundaries_advisory=FINE_SECONDS,
        )
        self.fast_checks = meter.create_counter(
            "rxllm.validation.fast",
            unit="{check}",
            description="Checks of one chunk that took under 100 µs: counted, not timed.",
        )
        self.verdicts = meter.create_counter(
            "rxllm.verdicts", unit="{verdict}", description="Chunk verdicts, by requirement and status."
        )
        self.timeouts = meter.create_counter(
            "rxllm.validation.timeouts", unit="{check}", description="Checks that ran past their deadline."
        )
        self.verdict_to_stop = meter.create_histogram(
            "rxllm.verdict_to_stop.duration",
            unit=seconds,
            description="A failing verdict to its generation's producer closed (the HTTP response "
            "closed, or the source's task ended).",
            explicit_bucket_boundaries_advisory=FINE_SECONDS,
        )
        self.deltas_after_verdict = meter.create_histogram(
            "rxllm.deltas_after_verdict",
            unit="{delta}",
            description="Deltas the producer handed on after a failing verdict (what the server "
            "generated and never sent cannot be seen).",
            explicit_bucket_boundaries_advisory=DELTA_COUNTS,
        )
        self.retries = meter.create_counter(
            "rxllm.retries",
            unit="{retry}",
            description="Retries: of a stream after a failed chunk, or of an HTTP request.",
        )
        self.errors = meter.create_counter(
            "rxllm.errors",
            unit="{error}",
            description="Exceptions that ended a run or a session call, by type (each counted once).",
        )
        self.active_streams = meter.create_up_down_counter(
            "rxllm.streams.active", unit="{stream}", description="Streaming runs in progress."
        )


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("rxllm")
    except Exception:  # not installed as a distribution (a source checkout)
        return "0"


_instruments: Instruments | None = None


def configure(settings: Any) -> None:
    """Take the instruments from the global providers (called by ``telemetry.enable``)."""
    global _instruments
    _instruments = Instruments(settings.content, settings.chunk_events, settings.traces, settings.metrics)


def active_instruments() -> Instruments:
    assert _instruments is not None, "engine.core.telemetry.enable() configures the instruments"
    return _instruments


# -- clocks: GenerationInfo holds perf_counter() readings; spans want Unix nanoseconds ----


def unix_ns(perf: float) -> int:
    return time.time_ns() - int((time.perf_counter() - perf) * 1e9)


def event_ns(event: StreamEvent) -> int:
    return int(event.timestamp * 1e9)


def provider_name(backend: Any) -> str:
    name = getattr(backend, "provider", None)
    return str(name) if name else type(backend).__name__


def requirement_label(req: Any) -> str:
    label = getattr(req, "label", None)
    text = label if isinstance(label, str) and label else type(req).__name__
    return text[:100]
