"""The span of a run (``rxllm.run {model}``) and of a session call (``rxllm.session {model}``),
and the observer of a run's events that writes the run's span events and metrics.

The run's span is current while the generation starts and inside every check, so a judge's
own request is its child.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
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
from engine.core.telemetry_otel.generations import GenerationRecord
from engine.core.telemetry_otel.instruments import (
    FAST_CHECK_SECONDS,
    Instruments,
    active_instruments,
    event_ns,
    provider_name,
    requirement_label,
    unix_ns,
)

if TYPE_CHECKING:
    from engine.core.generation import GenerationInfo

__all__ = ["call_scope", "run_scope"]


# -- runs -----------------------------------------------------------------------------------


@contextlib.contextmanager
def run_scope(backend: Any, action: Any, requirements: Sequence[Any]) -> Iterator[_Run]:
    """The run's span, current while the body (starting the generation) runs."""
    inst = active_instruments()
    model = getattr(backend, "model_id", None)
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider_name(backend),
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
    inst = active_instruments()
    model = getattr(backend, "model_id", None)
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider_name(backend),
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


def _count_error(inst: Instruments, error: BaseException, attributes: dict[str, Any]) -> None:
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

    def __init__(self, inst: Instruments, span: trace.Span, attributes: dict[str, Any]) -> None:
        self.inst = inst
        self.span = span
        self.context = trace.set_span_in_context(span)
        self.metric_attributes = {
            k: v for k, v in attributes.items() if k in ("gen_ai.provider.name", "gen_ai.request.model")
        }
        self.started = time.time()
        # The run's events, as they come: taken by list.append (no Python call per event on
        # the path every chunk takes) and read once, when the run ends (:meth:`_read`).
        self.events: list[StreamEvent] = []
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
        self.labels = [requirement_label(req) for req in requirements]
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
        # the call): the wrapper is one too, and costs one call per check. Its parameters are
        # the ones the engine passes (the chunk, then backend and ctx by keyword): packing
        # them as *args/**kwargs would cost as much again.
        async def timed(chunk: str, *, backend: Any, ctx: Any) -> Any:
            started = clock()
            result = await check(chunk, backend=backend, ctx=ctx)
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
        """Keep *result*'s events until the run ends, and take them then."""
        self.mots = result.mots
        generation = result.mot.generation
        if generation.provider:  # the backend's own name for itself, known once it started
            provider = generation.provider.lower()
            self.span.set_attribute("gen_ai.provider.name", provider)
            self.metric_attributes = {**self.metric_attributes, "gen_ai.provider.name": provider}
            for attributes in self.check_attributes:  # the timed checks' own, shared with them
                attributes["gen_ai.provider.name"] = provider
        self.subscription = subscribe(result.observable, self.events.append, self._on_error, self._end)
        if self.ended and self.subscription is not None:
            self.subscription.dispose()

    def _on_error(self, error: Exception) -> None:
        self._end()

    def _read(self) -> CompletedEvent | None:
        """Take the run's events, once it has ended: the run span's events, the verdict
        counts and the chunks' times. Returns its ``CompletedEvent``, if it had one."""
        inst, span = self.inst, self.span
        completed: CompletedEvent | None = None
        first_chunk = last_chunk = 0.0
        chunks = 0
        counts, chunk_events = self.verdicts_by_requirement, inst.chunk_events
        events, self.events = self.events, []
        for event in events:  # a chunk's two events are taken here, without a call more
            if isinstance(event, ChunkEvent):
                if not chunks:
                    first_chunk = event.timestamp
                last_chunk = event.timestamp
                chunks += 1
            elif isinstance(event, QuickCheckEvent):
                unusual = chunk_events or not event.passed
                for i, result in enumerate(event.results):
                    key = (i, result.success)
                    counts[key] = counts.get(key, 0) + 1
                    if result.reason is not None:
                        unusual = True
                if unusual:
                    self._unusual_verdicts(event)
            elif isinstance(event, RetryEvent):
                span.add_event(
                    "rxllm.retry",
                    {"rxllm.retry.attempt": event.attempt, "rxllm.retry.reason": redact(event.reason)},
                    timestamp=event_ns(event),
                )
                inst.retries.add(1, {**self.metric_attributes, "rxllm.retry.kind": "stream"})
            elif isinstance(event, ErrorEvent):
                message = redact(event.detail)
                span.add_event(
                    "exception",
                    {"exception.type": event.exception_type, "exception.message": message},
                    timestamp=event_ns(event),
                )
                span.set_attribute("error.type", event.exception_type)
                span.set_status(Status(StatusCode.ERROR, f"{event.exception_type}: {message}"))
                inst.errors.add(1, {**self.metric_attributes, "error.type": event.exception_type})
            elif isinstance(event, CompletedEvent):
                completed = event
        self.chunks = chunks
        if chunks and inst.metrics:
            inst.time_to_first_chunk.record(
                max(0.0, first_chunk - self.started), self.metric_attributes, self.context
            )
            if chunks >= 2:  # as the GenAI conventions' time per output token: (last - first) / (n - 1)
                mean = (last_chunk - first_chunk) / (chunks - 1)
                inst.time_per_chunk.record(max(0.0, mean), self.metric_attributes, self.context)
        return completed

    def _unusual_verdicts(self, event: QuickCheckEvent) -> None:
        """The verdicts of a chunk that are not all plain passes (or all of them, with
        ``chunk_events``): span events, timeouts, and a failure's stop to measure."""
        inst, span = self.inst, self.span
        for req, result in zip(event.requirements, event.results, strict=False):
            status, reason, label = result.success, result.reason or "", requirement_label(req)
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
                    timestamp=event_ns(event),
                )
        if not event.passed and 0 < event.attempt <= len(self.mots):
            mot = self.mots[event.attempt - 1]
            record = getattr(mot, "_telemetry", None)
            if isinstance(record, GenerationRecord):
                record.after_end(lambda generation: self._stopped(generation))

    def _stopped(self, generation: GenerationInfo) -> None:
        """The generation a failing verdict cancelled has ended: how fast, and what came after."""
        verdict = generation.cancel_requested_at
        stops = [t for t in (generation.connection_closed_at, generation.cancelled_at) if t is not None]
        if verdict is None or not stops:
            return  # the generation had already ended by itself (a verdict on the flushed end)
        self.inst.verdict_to_stop.record(max(0.0, min(stops) - verdict), self.metric_attributes)
        after = max(0, generation.deltas_sent - generation.deltas_received)
        self.inst.deltas_after_verdict.record(after, self.metric_attributes)

    def _end(self) -> None:
        if self.ended:
            return
        self.ended = True
        inst, span = self.inst, self.span
        completed: CompletedEvent | None = None
        try:
            completed = self._read()
        except Exception as exc:  # a bug here must neither leave the span open nor vanish
            report_unhandled(exc, "rxllm telemetry failed to read a run's events")
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
                    timestamp=unix_ns(g.cancel_requested_at),
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
        self._end()
