"""The OpenTelemetry side of :mod:`engine.core.telemetry`: spans and metrics of runs and generations.

Imported only when telemetry is switched on. Attribute names follow the OpenTelemetry
GenAI semantic conventions of semantic conventions release 1.37.0 (``gen_ai.provider.name``,
``gen_ai.request.model``, ``gen_ai.operation.name``, ``gen_ai.usage.input_tokens`` /
``output_tokens``, ``gen_ai.response.finish_reasons``, ``gen_ai.input.messages`` /
``gen_ai.output.messages`` for opt-in content); what the conventions do not cover is named
under ``rxllm.``.

Spans: ``rxllm.run {model}`` per run (current while the generation starts and inside every
check, so a judge's own request is its child), ``chat {model}`` per generation (written
from its :class:`~engine.core.generation.GenerationInfo` when it ends, with its real start and
end times). Metrics: see :data:`METRIC_NAMES`.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from engine.core.asyncrx import report_unhandled, subscribe
from engine.core.events import (
    ChunkEvent,
    CompletedEvent,
    ErrorEvent,
    QuickCheckEvent,
    RetryEvent,
    StreamEvent,
)
from engine.core.redaction import redact

if TYPE_CHECKING:  # not imported: the thunk imports this module's switch while it loads
    from engine.core.generation import GenerationInfo

__all__ = ["METRIC_NAMES", "SEMCONV_VERSION", "configure", "generation_ended", "generation_started", "redact"]

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


class _Instruments:
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
            description="Time between two validated chunks delivered in a run.",
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


_instruments: _Instruments | None = None


def configure(settings: Any) -> None:
    """Take the instruments from the global providers (called by ``telemetry.enable``)."""
    global _instruments
    _instruments = _Instruments(settings.content, settings.chunk_events, settings.traces, settings.metrics)


def _inst() -> _Instruments:
    assert _instruments is not None, "engine.core.telemetry.enable() configures the instruments"
    return _instruments


# -- clocks: GenerationInfo holds perf_counter() readings; spans want Unix nanoseconds ----


def _unix_ns(perf: float) -> int:
    return time.time_ns() - int((time.perf_counter() - perf) * 1e9)


def _event_ns(event: StreamEvent) -> int:
    return int(event.timestamp * 1e9)


def _provider(backend: Any) -> str:
    name = getattr(backend, "provider", None)
    return str(name) if name else type(backend).__name__


def _label(req: Any) -> str:
    label = getattr(req, "label", None)
    text = label if isinstance(label, str) and label else type(req).__name__
    return text[:100]


# -- runs -----------------------------------------------------------------------------------


@contextlib.contextmanager
def run_scope(backend: Any, action: Any, requirements: Sequence[Any]) -> Iterator[_Run]:
    """The run's span, current while the body (starting the generation) runs."""
    inst = _inst()
    model = getattr(backend, "model_id", None)
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": _provider(backend),
        "rxllm.requirements": len(requirements),
    }
    if isinstance(model, str):
        attributes["gen_ai.request.model"] = model
    if inst.content:
        attributes["gen_ai.input.messages"] = _messages("user", str(action))
    name = f"rxllm.run {model}" if isinstance(model, str) else "rxllm.run"
    span = inst.tracer.start_span(name, kind=SpanKind.INTERNAL, attributes=attributes)
    run = _Run(inst, span, attributes)
    run.wrap_checks(requirements)
    token = otel_context.attach(run.context)
    try:
        yield run
    except BaseException as exc:
        run.failed_to_start(exc)
        raise
    finally:
        otel_context.detach(token)


@contextlib.contextmanager
def call_scope(call: str, backend: Any) -> Iterator[None]:
    """The span of one session call, current while it runs; an exception marks it failed."""
    inst = _inst()
    model = getattr(backend, "model_id", None)
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": _provider(backend),
        "rxllm.session.call": call,
    }
    if isinstance(model, str):
        attributes["gen_ai.request.model"] = model
    name = f"rxllm.session {model}" if isinstance(model, str) else "rxllm.session"
    span = inst.tracer.start_span(name, kind=SpanKind.INTERNAL, attributes=attributes)
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield
    except BaseException as exc:
        error_type = type(exc).__name__
        span.add_event("exception", {"exception.type": error_type, "exception.message": redact(str(exc))})
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, f"{error_type}: {redact(str(exc))}"))
        _count_error(inst, exc, attributes)
        raise
    finally:
        otel_context.detach(token)
        span.end()


_COUNTED = "_rxllm_error_counted"  # set on an exception rxllm.errors has counted


def _count_error(inst: _Instruments, error: BaseException, attributes: dict[str, Any]) -> None:
    """Add *error* to ``rxllm.errors`` once, however many scopes (nested session calls, a run
    in a call) it passes out of. A cancellation is not an error."""
    if not isinstance(error, Exception) or getattr(error, _COUNTED, False):
        return
    with contextlib.suppress(AttributeError):  # an exception type without __dict__ is counted each time
        setattr(error, _COUNTED, True)
    labels = {k: v for k, v in attributes.items() if k in ("gen_ai.provider.name", "gen_ai.request.model")}
    inst.errors.add(1, {**labels, "error.type": type(error).__name__})


def _messages(role: str, text: str) -> str:
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}], ensure_ascii=False)


class _Run:
    """Observes one run's events: span events, the run span's attributes, and metrics."""

    def __init__(self, inst: _Instruments, span: trace.Span, attributes: dict[str, Any]) -> None:
        self.inst = inst
        self.span = span
        self.context = trace.set_span_in_context(span)
        self.metric_attributes = {
            k: v for k, v in attributes.items() if k in ("gen_ai.provider.name", "gen_ai.request.model")
        }
        self.started = time.time()
        self.last_chunk: float | None = None
        self.chunks = 0
        self.labels: list[str] = []
        # Per requirement (by position): the attributes of its checks, and how many were fast.
        self.check_attributes: list[dict[str, Any]] = []
        self.fast_checks: list[int] = []
        # (requirement's position, status) -> count; added to rxllm.verdicts when the run ends:
        # one measurement per requirement and status per run, not one per check.
        self.verdicts_by_requirement: dict[tuple[int, str], int] = {}
        self.mots: list[Any] = []
        self.ended = False
        self.subscription: Any = None
        self.stream_attributes = self.metric_attributes
        inst.active_streams.add(1, self.stream_attributes)

    def wrap_checks(self, requirements: Sequence[Any]) -> None:
        """Time each check: ``rxllm.validation.duration`` if it took ``FAST_CHECK_SECONDS`` or
        longer, else one more for ``rxllm.validation.fast`` (added once per run, at its end).

        Only the run's own copies of the requirements are touched (``stream_with_chunking``
        copies them), through their instance ``__dict__``; a requirement without one is
        checked untimed. Checks run inside the run's context without help: the tasks that
        run them are created, directly or not, by the generation's producer, which started
        while the run's span was current (so a judge's own request is the run's child).
        """
        self.labels = [_label(req) for req in requirements]
        self.check_attributes = [
            {**self.metric_attributes, "rxllm.requirement": label} for label in self.labels
        ]
        self.fast_checks = [0] * len(requirements)
        for position, req in enumerate(requirements):
            own = getattr(req, "__dict__", None)
            if own is None:
                continue
            own["stream_validate"] = self._timed_check(req.stream_validate, position)

    def _timed_check(self, check: Callable[..., Any], position: int) -> Callable[..., Any]:
        record = self.inst.validation_duration.record
        attributes = self.check_attributes[position]
        fast = self.fast_checks
        clock = time.perf_counter

        # stream_validate is an `async def` (the engine refuses a requirement whose isn't, at
        # the call): the wrapper is one too, and costs one call per check.
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = clock()
            result = await check(*args, **kwargs)
            elapsed = clock() - started
            if elapsed >= FAST_CHECK_SECONDS:
                record(elapsed, attributes)
            elif self.ended:  # a check the run's end did not wait for
                self.inst.fast_checks.add(1, attributes)
            else:
                fast[position] += 1
            return result

        return timed

    # -- the run's events ---------------------------------------------------------------

    def watch(self, result: Any) -> None:
        """Follow *result*'s events until its ``CompletedEvent``."""
        self.mots = result.mots
        generation = result.mot.generation
        if generation.provider:  # the backend's own name for itself, known once it started
            provider = generation.provider.lower()
            self.span.set_attribute("gen_ai.provider.name", provider)
            self.metric_attributes = {**self.metric_attributes, "gen_ai.provider.name": provider}
            for attributes in self.check_attributes:  # the timed checks' own, shared with them
                attributes["gen_ai.provider.name"] = provider
        self.subscription = subscribe(result.observable, self._on_event, self._on_error, self._on_completed)
        if self.ended and self.subscription is not None:
            self.subscription.dispose()

    def _on_event(self, event: StreamEvent) -> None:
        if self.ended:
            return
        try:  # a chunk's two events are handled here, without a call more: they come per chunk
            if isinstance(event, ChunkEvent):
                self.chunks += 1
                if self.inst.metrics:
                    now, last = event.timestamp, self.last_chunk
                    if last is None:
                        self.inst.time_to_first_chunk.record(
                            max(0.0, now - self.started), self.metric_attributes, self.context
                        )
                    else:
                        self.inst.time_per_chunk.record(
                            max(0.0, now - last), self.metric_attributes, self.context
                        )
                    self.last_chunk = now
            elif isinstance(event, QuickCheckEvent):
                self._verdicts(event)
            else:
                self._take(event)
        except Exception as exc:  # a bug here must neither end the run nor vanish
            report_unhandled(exc, "rxllm telemetry failed to record a run event")

    def _on_error(self, error: Exception) -> None:
        self._end(None)

    def _on_completed(self) -> None:
        self._end(None)

    def _take(self, event: StreamEvent) -> None:
        """The run's other events (a chunk's are taken in :meth:`_on_event`)."""
        inst, span = self.inst, self.span
        if isinstance(event, RetryEvent):
            span.add_event(
                "rxllm.retry",
                {"rxllm.retry.attempt": event.attempt, "rxllm.retry.reason": redact(event.reason)},
                timestamp=_event_ns(event),
            )
            inst.retries.add(1, {**self.metric_attributes, "rxllm.retry.kind": "stream"})
        elif isinstance(event, ErrorEvent):
            message = redact(event.detail)
            span.add_event(
                "exception",
                {"exception.type": event.exception_type, "exception.message": message},
                timestamp=_event_ns(event),
            )
            span.set_attribute("error.type", event.exception_type)
            span.set_status(Status(StatusCode.ERROR, f"{event.exception_type}: {message}"))
            inst.errors.add(1, {**self.metric_attributes, "error.type": event.exception_type})
        elif isinstance(event, CompletedEvent):
            self._end(event)

    def _verdicts(self, event: QuickCheckEvent) -> None:
        # Per chunk: counting only (the metric is added once per run); the span events and
        # the timeouts are for the few verdicts that are not plain passes.
        counts = self.verdicts_by_requirement
        unusual = not event.passed or self.inst.chunk_events
        for i, result in enumerate(event.results):
            key = (i, result.success)
            counts[key] = counts.get(key, 0) + 1
            if result.reason is not None:
                unusual = True
        if unusual:
            self._verdict_details(event)
        if not event.passed and 0 < event.attempt <= len(self.mots):
            mot = self.mots[event.attempt - 1]
            record = getattr(mot, "_telemetry", None)
            if isinstance(record, _GenerationRecord):
                record.after_end(lambda generation: self._stopped(generation))

    def _verdict_details(self, event: QuickCheckEvent) -> None:
        inst, span = self.inst, self.span
        for req, result in zip(event.requirements, event.results, strict=False):
            status, reason, label = result.success, result.reason or "", _label(req)
            if reason.startswith("timed out after"):
                inst.timeouts.add(1, {**self.metric_attributes, "rxllm.requirement": label})
            if status == "fail" or inst.chunk_events:
                span.add_event(
                    "rxllm.verdict" if status != "fail" else "rxllm.verdict.fail",
                    {
                        "rxllm.requirement": label,
                        "rxllm.verdict.status": status,
                        "rxllm.verdict.reason": redact(reason),
                        "rxllm.chunk.index": event.chunk_index,
                        "rxllm.attempt": event.attempt,
                    },
                    timestamp=_event_ns(event),
                )

    def _stopped(self, generation: GenerationInfo) -> None:
        """The generation a failing verdict cancelled has ended: how fast, and what came after."""
        verdict = generation.cancel_requested_at
        stops = [t for t in (generation.connection_closed_at, generation.cancelled_at) if t is not None]
        if verdict is None or not stops:
            return  # the generation had already ended by itself (a verdict on the flushed end)
        self.inst.verdict_to_stop.record(max(0.0, min(stops) - verdict), self.metric_attributes)
        after = max(0, generation.deltas_sent - generation.deltas_received)
        self.inst.deltas_after_verdict.record(after, self.metric_attributes)

    def _end(self, completed: CompletedEvent | None) -> None:
        if self.ended:
            return
        self.ended = True
        inst, span = self.inst, self.span
        attributes: dict[str, Any] = {
            "rxllm.run.success": bool(completed is not None and completed.success),
            "rxllm.attempts": len(self.mots) or 1,
            "rxllm.chunks": self.chunks,
        }
        by_status: Counter[str] = Counter()
        for (_, status), count in self.verdicts_by_requirement.items():
            by_status[status] += count
        for status in ("pass", "fail", "unknown"):
            attributes[f"rxllm.verdicts.{status}"] = by_status[status]
        generations = [mot.generation for mot in self.mots]
        reasons = [g.done_reason for g in generations if g.done_reason]
        if by_status["fail"] and completed is not None and not completed.success:
            reasons.append("content_filter")
        if reasons:
            attributes["gen_ai.response.finish_reasons"] = reasons
        for key, name in (
            ("prompt_tokens", "gen_ai.usage.input_tokens"),
            ("completion_tokens", "gen_ai.usage.output_tokens"),
        ):
            counts = [g.usage[key] for g in generations if isinstance(g.usage.get(key), int)]
            if counts:
                attributes[name] = sum(counts)
        if inst.content and completed is not None:
            attributes["gen_ai.output.messages"] = _messages("assistant", completed.full_text)
        span.set_attributes(attributes)
        for g in generations:
            if g.cancel_requested_at is not None:
                span.add_event(
                    "rxllm.cancel",
                    {"rxllm.deltas.received": g.deltas_received},
                    timestamp=_unix_ns(g.cancel_requested_at),
                )
        for (position, status), count in self.verdicts_by_requirement.items():
            label = self.labels[position] if position < len(self.labels) else str(position)
            inst.verdicts.add(
                count, {**self.metric_attributes, "rxllm.requirement": label, "rxllm.verdict.status": status}
            )
        for position, count in enumerate(self.fast_checks):
            if count:
                inst.fast_checks.add(count, self.check_attributes[position])
        inst.run_duration.record(max(0.0, time.time() - self.started), self.metric_attributes)
        inst.active_streams.add(-1, self.stream_attributes)
        span.end()
        subscription, self.subscription = self.subscription, None
        if subscription is not None:
            subscription.dispose()

    def failed_to_start(self, error: BaseException) -> None:
        """The generation could not start (a refused argument, an unreachable server)."""
        if self.ended:
            return
        error_type = type(error).__name__
        # Not record_exception: its stack trace may quote secrets.
        self.span.add_event(
            "exception", {"exception.type": error_type, "exception.message": redact(str(error))}
        )
        self.span.set_attribute("error.type", error_type)
        self.span.set_status(Status(StatusCode.ERROR, f"{error_type}: {redact(str(error))}"))
        _count_error(self.inst, error, self.metric_attributes)
        self._end(None)


# -- generations ----------------------------------------------------------------------------


class _GenerationRecord:
    """The context a generation started in, and what waits for its end."""

    __slots__ = ("ended", "generation", "parent", "waiters")

    def __init__(self, parent: otel_context.Context) -> None:
        self.parent = parent
        self.ended = False
        self.generation: GenerationInfo | None = None
        self.waiters: list[Callable[[GenerationInfo], None]] = []

    def after_end(self, callback: Callable[[GenerationInfo], None]) -> None:
        if self.ended and self.generation is not None:
            callback(self.generation)
        else:
            self.waiters.append(callback)


def generation_started(generation: GenerationInfo) -> _GenerationRecord:
    """Note the current context: the generation's span will be its child."""
    return _GenerationRecord(otel_context.get_current())


def generation_ended(
    record: object, generation: GenerationInfo, error: Exception | None, cancelled: bool
) -> None:
    """Write the generation's span (real start and end times) and its metrics; never raises."""
    if not isinstance(record, _GenerationRecord) or record.ended:
        return
    try:
        _write_generation(record, generation, error, cancelled)
    except Exception as exc:
        report_unhandled(exc, "rxllm telemetry failed to record a generation")
    record.ended, record.generation = True, generation
    waiters, record.waiters = record.waiters, []
    for waiter in waiters:
        try:
            waiter(generation)
        except Exception as exc:
            report_unhandled(exc, "rxllm telemetry failed to record a stop")


def _write_generation(
    record: _GenerationRecord, generation: GenerationInfo, error: Exception | None, cancelled: bool
) -> None:
    inst = _inst()
    provider = (generation.provider or "unknown").lower()
    common: dict[str, Any] = {"gen_ai.provider.name": provider}
    if generation.model:
        common["gen_ai.request.model"] = generation.model
    attributes: dict[str, Any] = {**common, "gen_ai.operation.name": "chat"}
    extra = generation.extra
    status = extra.get("http_status")
    if isinstance(status, int):
        attributes["http.response.status_code"] = status
    retries = extra.get("retries")
    attributes["rxllm.request.retries"] = retries if isinstance(retries, int) else 0
    if generation.done_reason:
        attributes["gen_ai.response.finish_reasons"] = [generation.done_reason]
    usage = generation.usage
    if isinstance(usage.get("prompt_tokens"), int):
        attributes["gen_ai.usage.input_tokens"] = usage["prompt_tokens"]
        inst.tokens_input.add(usage["prompt_tokens"], common)
    if isinstance(usage.get("completion_tokens"), int):
        attributes["gen_ai.usage.output_tokens"] = usage["completion_tokens"]
        inst.tokens_output.add(usage["completion_tokens"], common)
    attributes["rxllm.deltas.received"] = generation.deltas_received
    attributes["rxllm.deltas.sent"] = generation.deltas_sent
    attributes["rxllm.cancelled"] = cancelled
    started = _unix_ns(generation.started_at)
    finished_at = generation.finished_at if generation.finished_at is not None else time.perf_counter()
    name = f"chat {generation.model}" if generation.model else "chat"
    span = inst.tracer.start_span(
        name, context=record.parent, kind=SpanKind.CLIENT, attributes=attributes, start_time=started
    )
    for at, event in (
        (generation.first_delta_at, "rxllm.first_delta"),
        (generation.cancel_requested_at, "rxllm.cancel"),
        (generation.connection_closed_at, "rxllm.connection_closed"),
        (generation.cancelled_at, "rxllm.producer_stopped"),
    ):
        if at is not None:
            span.add_event(event, timestamp=_unix_ns(at))
    for at, attempt, reason in extra.get("retry_log", ()):
        span.add_event(
            "rxllm.retry",
            {"rxllm.retry.attempt": attempt, "rxllm.retry.reason": redact(str(reason))},
            timestamp=_unix_ns(at),
        )
    if isinstance(retries, int) and retries:
        inst.retries.add(retries, {**common, "rxllm.retry.kind": "http"})
    metric_attributes = dict(common)
    if error is not None:
        error_type = type(error).__name__
        message = redact(str(error))
        span.add_event("exception", {"exception.type": error_type, "exception.message": message})
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, f"{error_type}: {message}"))
        metric_attributes["error.type"] = error_type
    span.end(end_time=max(started, _unix_ns(finished_at)))
    inst.request_duration.record(max(0.0, finished_at - generation.started_at), metric_attributes)
    if generation.first_delta_at is not None:
        inst.time_to_first_token.record(max(0.0, generation.first_delta_at - generation.started_at), common)
