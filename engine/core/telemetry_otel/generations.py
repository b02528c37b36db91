"""The span (``chat {model}``) and the metrics of one generation, written from its
:class:`~engine.core.generation.GenerationInfo` when it ends, with its real start and end times."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind, Status, StatusCode

from engine.core.asyncrx import report_unhandled
from engine.core.generation import GenerationInfo
from engine.core.redaction import redact
from engine.core.telemetry_otel.instruments import active_instruments, unix_ns

__all__ = ["GenerationRecord", "generation_ended", "generation_started"]


# -- generations ----------------------------------------------------------------------------


class GenerationRecord:
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


def generation_started(generation: GenerationInfo) -> GenerationRecord:
    """Note the current context: the generation's span will be its child."""
    return GenerationRecord(otel_context.get_current())


def generation_ended(
    record: object, generation: GenerationInfo, error: Exception | None, cancelled: bool
) -> None:
    """Write the generation's span (real start and end times) and its metrics; never raises."""
    if not isinstance(record, GenerationRecord) or record.ended:
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
    record: GenerationRecord, generation: GenerationInfo, error: Exception | None, cancelled: bool
) -> None:
    inst = active_instruments()
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
    started = unix_ns(generation.started_at)
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
            span.add_event(event, timestamp=unix_ns(at))
    for at, attempt, reason in extra.get("retry_log", ()):
        span.add_event(
            "rxllm.retry",
            {"rxllm.retry.attempt": attempt, "rxllm.retry.reason": redact(str(reason))},
            timestamp=unix_ns(at),
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
    span.end(end_time=max(started, unix_ns(finished_at)))
    inst.request_duration.record(max(0.0, finished_at - generation.started_at), metric_attributes)
    if generation.first_delta_at is not None:
        inst.time_to_first_token.record(max(0.0, generation.first_delta_at - generation.started_at), common)
