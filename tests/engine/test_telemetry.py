"""OpenTelemetry traces and metrics of runs, read back with the SDK's in-memory exporter and reader.

OpenTelemetry's global providers can be set once per process: the session fixture sets SDK
providers once; each test clears the span exporter and drains the (delta) metric reader.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, UpDownCounter
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from backends import ScriptedBackend
from engine import (
    ChunkEvent,
    Instruction,
    PartialValidationResult,
    Requirement,
    SimpleContext,
    ValidationResult,
    stream_with_chunking,
    telemetry_export,
)
from engine.core import telemetry
from engine.core.backend import Backend
from engine.core.context import Context
from engine.core.continuation import StreamRetry
from engine.core.options import ModelOption
from tests.isolated import run_isolated


class OpenSpans(SpanProcessor):
    """Spans started and not ended."""

    def __init__(self) -> None:
        self.open: dict[int, str] = {}

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.open[span.context.span_id] = span.name

    def on_end(self, span: ReadableSpan) -> None:
        assert span.context is not None
        self.open.pop(span.context.span_id, None)


DELTA = {
    Counter: AggregationTemporality.DELTA,
    Histogram: AggregationTemporality.DELTA,
    UpDownCounter: AggregationTemporality.DELTA,
}


class Otel:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.open = OpenSpans()
        self.reader = InMemoryMetricReader(preferred_temporality=DELTA)  # type: ignore[arg-type]
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(self.open)
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        meter_provider = MeterProvider(metric_readers=[self.reader, telemetry_export.prometheus_reader()])
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)

    def reset(self) -> None:
        self.spans.clear()
        self.open.open.clear()
        self.reader.get_metrics_data()

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found


@pytest.fixture(scope="session")
def otel_session() -> Otel:
    return Otel()


@pytest.fixture
def otel(otel_session: Otel) -> Iterator[Otel]:
    telemetry.enable(traces=True, metrics=True)
    otel_session.reset()
    yield otel_session
    telemetry.disable()


def collect(otel: Otel) -> dict[str, list[Any]]:
    """Every metric's data points since the last collection, by name."""
    data = otel.reader.get_metrics_data()
    found: dict[str, list[Any]] = {}
    if data is None:
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


def total(points: list[Any], **attributes: Any) -> float:
    """Sum (counters) or count (histograms) of the points whose attributes include *attributes*."""
    value = 0.0
    for point in points:
        if all(point.attributes.get(k) == v for k, v in attributes.items()):
            value += point.count if hasattr(point, "count") else point.value
    return value


class Words(Requirement):
    """Fails a chunk that contains *word*."""

    def __init__(self, word: str) -> None:
        super().__init__(f"no {word}")
        self.word = word

    async def stream_validate(self, chunk: str, *, backend: Backend, ctx: Context) -> PartialValidationResult:
        if self.word in chunk:
            return PartialValidationResult("fail", reason=f"says {self.word}")
        return PartialValidationResult("pass")

    async def validate(self, backend: Backend, ctx: Context, **_: Any) -> ValidationResult:
        return ValidationResult(True)


def one(spans: list[ReadableSpan], prefix: str) -> ReadableSpan:
    matching = [s for s in spans if s.name.startswith(prefix)]
    assert len(matching) == 1, [s.name for s in spans]
    return matching[0]


def events(span: ReadableSpan, name: str) -> list[dict[str, Any]]:
    return [dict(e.attributes or {}) for e in span.events if e.name == name]


# -- runs ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_passing_run_is_one_run_span_over_its_request_span_with_counts_and_metrics(
    otel: Otel,
) -> None:
    backend = ScriptedBackend(["Hello there. ", "Second sentence. ", "Third."], model_id="tiny")
    result = await stream_with_chunking(
        Instruction("hi"), backend, SimpleContext(), requirements=[Words("zzz")]
    )
    await result.acomplete()
    assert result.completed
    spans = otel.finished()
    run, request = one(spans, "rxllm.run"), one(spans, "chat")
    assert run.name == "rxllm.run tiny" and request.name == "chat tiny"
    assert request.parent is not None and request.parent.span_id == run.context.span_id
    assert run.parent is None
    attributes = dict(run.attributes or {})
    assert attributes["gen_ai.provider.name"] == "scripted"
    assert attributes["gen_ai.request.model"] == "tiny"
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["rxllm.verdicts.pass"] == 3 and attributes["rxllm.verdicts.fail"] == 0
    assert attributes["rxllm.run.success"] is True and attributes["rxllm.chunks"] == 3
    assert tuple(attributes["gen_ai.response.finish_reasons"]) == ("stop",)
    assert "gen_ai.input.messages" not in attributes and "gen_ai.output.messages" not in attributes
    assert events(run, "rxllm.verdict") == []  # per-chunk events only when asked for
    assert dict(request.attributes or {})["rxllm.deltas.received"] == 3
    assert otel.open.open == {}
    found = collect(otel)
    assert (
        total(found["rxllm.verdicts"], **{"rxllm.verdict.status": "pass", "rxllm.requirement": "no zzz"}) == 3
    )
    checks = {"rxllm.requirement": "no zzz"}  # each check timed, or counted as fast
    assert (
        total(found.get("rxllm.validation.duration", []), **checks)
        + total(found["rxllm.validation.fast"], **checks)
        == 3
    )
    assert total(found["rxllm.time_to_first_chunk"]) == 1
    assert total(found["rxllm.time_per_chunk"]) == 1  # one value per run (see the next test)
    assert total(found["rxllm.request.duration"]) == 1
    assert total(found["rxllm.time_to_first_token"]) == 1
    assert total(found["rxllm.streams.active"]) == 0  # +1 then -1
    assert "rxllm.verdict_to_stop.duration" not in found


@pytest.mark.asyncio
async def test_time_per_chunk_is_one_value_per_run_the_mean_interval_between_its_chunks(otel: Otel) -> None:
    """rxllm.time_per_chunk is recorded once per run, as the GenAI conventions' time per output
    token is per request: (last chunk - first chunk) / (chunks - 1), from the ChunkEvents'
    own timestamps; a run of one chunk records none."""
    backend = ScriptedBackend([f"Sentence {i}. " for i in range(6)], delay=0.002)
    result = await stream_with_chunking(
        Instruction("hi"), backend, SimpleContext(), requirements=[Words("zzz")]
    )
    stamps = [event.timestamp async for event in result.events() if isinstance(event, ChunkEvent)]
    await result.acomplete()
    assert result.completed and len(stamps) == 6
    [point] = collect(otel)["rxllm.time_per_chunk"]
    assert point.count == 1  # a record per chunk would make 5
    assert point.sum == pytest.approx((stamps[-1] - stamps[0]) / 5, rel=1e-9, abs=1e-12)
    assert dict(point.attributes) == {"gen_ai.provider.name": "scripted", "gen_ai.request.model": "scripted"}

    single = await stream_with_chunking(
        Instruction("hi"), ScriptedBackend(["Only one."]), SimpleContext(), requirements=[Words("zzz")]
    )
    await single.acomplete()
    found = collect(otel)
    assert total(found["rxllm.time_to_first_chunk"]) == 1
    assert "rxllm.time_per_chunk" not in found  # no interval in a run of one chunk


class Slow(Words):
    """Passes after *pause* seconds, awaited (as a check doing I/O) or spent on the CPU."""

    def __init__(self, word: str, pause: float, awaits: bool) -> None:
        super().__init__(word)
        self.pause = pause
        self.awaits = awaits

    async def stream_validate(self, chunk: str, *, backend: Backend, ctx: Context) -> PartialValidationResult:
        if self.awaits:
            await asyncio.sleep(self.pause)
        else:
            until = time.perf_counter() + self.pause
            while time.perf_counter() < until:
                pass
        return PartialValidationResult("pass")


@pytest.mark.asyncio
async def test_checks_of_100_us_or_more_are_timed_and_faster_ones_counted(otel: Otel) -> None:
    backend = ScriptedBackend(["One. ", "Two. ", "Three. ", "Four."], model_id="tiny")
    requirements = [Slow("io", 0.002, awaits=True), Slow("cpu", 0.0005, awaits=False), Words("zzz")]
    result = await stream_with_chunking(
        Instruction("hi"), backend, SimpleContext(), requirements=requirements
    )
    await result.acomplete()
    assert result.completed
    found = collect(otel)
    durations, fast = found["rxllm.validation.duration"], found["rxllm.validation.fast"]
    for label, least in (("no io", 0.002), ("no cpu", 0.0005)):
        [point] = [p for p in durations if p.attributes["rxllm.requirement"] == label]
        assert point.count == 4 and point.sum >= 4 * least
        assert dict(point.attributes) == {
            "gen_ai.provider.name": "scripted",
            "gen_ai.request.model": "tiny",
            "rxllm.requirement": label,
        }
        assert total(fast, **{"rxllm.requirement": label}) == 0
    quick = {"rxllm.requirement": "no zzz"}
    assert total(fast, **quick) >= 1  # a few µs each; one may still be preempted past 100 µs
    assert total(fast, **quick) + total(durations, **quick) == 4 == total(found["rxllm.verdicts"], **quick)


@pytest.mark.asyncio
async def test_a_failing_check_is_an_event_a_cancel_and_a_verdict_to_stop_measure(otel: Otel) -> None:
    backend = ScriptedBackend(["Fine. ", "Then BAD. ", "More. ", "And more."], delay=0.001)
    result = await stream_with_chunking(
        Instruction("hi"), backend, SimpleContext(), requirements=[Words("BAD")]
    )
    await result.acomplete()
    await asyncio.sleep(0.01)  # the generation's end (its span) comes a loop turn after the cancel
    assert not result.completed
    spans = otel.finished()
    run, request = one(spans, "rxllm.run"), one(spans, "chat")
    [fail] = events(run, "rxllm.verdict.fail")
    assert fail == {
        "rxllm.requirement": "no BAD",
        "rxllm.verdict.status": "fail",
        "rxllm.verdict.reason": "says BAD",
        "rxllm.chunk.index": 1,
        "rxllm.attempt": 1,
    }
    assert len(events(run, "rxllm.cancel")) == 1
    attributes = dict(run.attributes or {})
    assert attributes["rxllm.run.success"] is False
    assert attributes["rxllm.verdicts.fail"] == 1 and attributes["rxllm.verdicts.pass"] == 1
    assert "content_filter" in attributes["gen_ai.response.finish_reasons"]
    assert dict(request.attributes or {})["rxllm.cancelled"] is True
    assert [e.name for e in request.events if e.name in ("rxllm.cancel", "rxllm.producer_stopped")] == [
        "rxllm.cancel",
        "rxllm.producer_stopped",
    ]
    assert otel.open.open == {}
    found = collect(otel)
    [stop] = found["rxllm.verdict_to_stop.duration"]
    assert stop.count == 1 and 0 <= stop.sum < 1.0
    assert stop.explicit_bounds[0] == 1e-6  # microsecond-fine buckets
    [after] = found["rxllm.deltas_after_verdict"]
    assert after.count == 1 and after.sum == 0
    assert total(found["rxllm.verdicts"], **{"rxllm.verdict.status": "fail"}) == 1


@pytest.mark.asyncio
async def test_a_retried_run_has_a_retry_event_and_a_request_span_per_attempt(otel: Otel) -> None:
    backend = ScriptedBackend(["One. ", "TWO. ", "Three."], continuations=[[" two. ", "Three."]])

    class NoShouting(Words):
        async def stream_validate(
            self, chunk: str, *, backend: Backend, ctx: Context
        ) -> PartialValidationResult:
            return (
                PartialValidationResult("fail", reason="shouting")
                if chunk.isupper()
                else PartialValidationResult("pass")
            )

    result = await stream_with_chunking(
        Instruction("count"),
        backend,
        SimpleContext(),
        requirements=[NoShouting("x")],
        retry=StreamRetry(max_attempts=2),
    )
    await result.acomplete()
    await asyncio.sleep(0.01)
    assert result.completed and result.attempts_used == 2
    spans = otel.finished()
    run = one(spans, "rxllm.run")
    requests = [s for s in spans if s.name.startswith("chat")]
    assert len(requests) == 2
    assert all(r.parent is not None and r.parent.span_id == run.context.span_id for r in requests)
    [retry] = events(run, "rxllm.retry")
    assert retry["rxllm.retry.attempt"] == 2 and "shouting" in retry["rxllm.retry.reason"]
    assert dict(run.attributes or {})["rxllm.attempts"] == 2
    assert otel.open.open == {}
    found = collect(otel)
    assert total(found["rxllm.retries"], **{"rxllm.retry.kind": "stream"}) == 1


@pytest.mark.asyncio
async def test_a_backend_error_marks_both_spans_with_a_redacted_message(otel: Otel) -> None:
    secret = "sk-abcdefghijklmnop1234"
    backend = ScriptedBackend(["Fine. ", "cut"], error=ConnectionError(f"server went away (key {secret})"))
    result = await stream_with_chunking(
        Instruction("hi"), backend, SimpleContext(), requirements=[Words("zzz")]
    )
    with pytest.raises(ConnectionError):
        await result.acomplete()
    spans = otel.finished()
    run, request = one(spans, "rxllm.run"), one(spans, "chat")
    for span in (run, request):
        assert span.status.status_code is StatusCode.ERROR
        [error] = events(span, "exception")
        assert error["exception.type"] == "ConnectionError"
        assert secret not in error["exception.message"] and "***" in error["exception.message"]
        assert secret not in (span.status.description or "")
        assert dict(span.attributes or {})["error.type"] == "ConnectionError"
    assert otel.open.open == {}
    found = collect(otel)
    assert total(found["rxllm.errors"], **{"error.type": "ConnectionError"}) == 1
    assert total(found["rxllm.request.duration"], **{"error.type": "ConnectionError"}) == 1


@pytest.mark.asyncio
async def test_a_run_cancelled_by_its_reader_ends_its_span_with_a_cancel(otel: Otel) -> None:
    backend = ScriptedBackend([f"Sentence {i}. " for i in range(50)], delay=0.001)
    result = await stream_with_chunking(Instruction("hi"), backend, SimpleContext())
    async for _chunk in result.astream():
        break
    await result.acomplete()
    await asyncio.sleep(0.01)
    spans = otel.finished()
    run, request = one(spans, "rxllm.run"), one(spans, "chat")
    assert dict(run.attributes or {})["rxllm.run.success"] is False
    assert len(events(run, "rxllm.cancel")) == 1
    assert events(run, "rxllm.verdict.fail") == []
    assert dict(request.attributes or {})["rxllm.cancelled"] is True
    assert otel.open.open == {}
    found = collect(otel)
    assert total(found["rxllm.streams.active"]) == 0
    assert "rxllm.verdict_to_stop.duration" not in found  # a reader's cancel is not a verdict


@pytest.mark.asyncio
async def test_a_judge_validator_request_is_a_child_of_the_run(otel: Otel) -> None:
    judge = ScriptedBackend(["yes"], model_id="judge")

    class Judge(Words):
        async def stream_validate(
            self, chunk: str, *, backend: Backend, ctx: Context
        ) -> PartialValidationResult:
            thunk, _ = await judge.generate_from_context(
                Instruction(chunk), SimpleContext(), model_options={ModelOption.STREAM: True}
            )
            await thunk.avalue()
            return PartialValidationResult("pass")

    backend = ScriptedBackend(["One. ", "Two."], model_id="writer")
    result = await stream_with_chunking(
        Instruction("hi"), backend, SimpleContext(), requirements=[Judge("j")]
    )
    await result.acomplete()
    spans = otel.finished()
    run = one(spans, "rxllm.run")
    judged = [s for s in spans if s.name == "chat judge"]
    assert len(judged) == 2
    assert all(s.parent is not None and s.parent.span_id == run.context.span_id for s in judged)


@pytest.mark.asyncio
async def test_content_and_chunk_events_only_when_asked_for(otel: Otel) -> None:
    telemetry.enable(traces=True, metrics=True, content=True, chunk_events=True)
    backend = ScriptedBackend(["Hello. ", "World."])
    result = await stream_with_chunking(
        Instruction("the prompt"), backend, SimpleContext(), requirements=[Words("zzz")]
    )
    await result.acomplete()
    run = one(otel.finished(), "rxllm.run")
    attributes = dict(run.attributes or {})
    assert "the prompt" in attributes["gen_ai.input.messages"]
    assert "Hello. World." in attributes["gen_ai.output.messages"]
    assert [e["rxllm.chunk.index"] for e in events(run, "rxllm.verdict")] == [0, 1]


@pytest.mark.asyncio
async def test_nothing_is_emitted_when_telemetry_is_off(otel: Otel) -> None:
    telemetry.disable()
    backend = ScriptedBackend(["Fine. ", "BAD. "])
    result = await stream_with_chunking(
        Instruction("hi"), backend, SimpleContext(), requirements=[Words("BAD")]
    )
    await result.acomplete()
    assert otel.finished() == []
    assert collect(otel) == {}
    assert "stream_validate" not in vars(result.streaming_failures[0][0])  # checks not wrapped


def test_enable_rejects_a_non_bool() -> None:
    with pytest.raises(TypeError, match="traces must be True or False"):
        telemetry.enable(traces="yes")  # type: ignore[arg-type]


# -- /metrics ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_metrics_page_renders_prometheus_text_when_on_and_404_with_instructions_when_off(
    otel: Otel,
) -> None:
    backend = ScriptedBackend(["Fine. "])
    result = await stream_with_chunking(
        Instruction("hi"), backend, SimpleContext(), requirements=[Words("BAD")]
    )
    await result.acomplete()
    app = web.Application()
    app.router.add_get("/metrics", telemetry_export.metrics_handler())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        response = await client.get("/metrics")
        text = await response.text()
        assert response.status == 200
        assert "rxllm_verdicts" in text and "rxllm_request_duration_seconds_bucket" in text
        telemetry.disable()
        response = await client.get("/metrics")
        assert response.status == 404
        assert "RXLLM_METRICS_ENABLED=1" in await response.text()


# -- off: nothing imported, no call per delta --------------------------------------------------

COUNT_CALLS = r"""
import asyncio, sys
{block}
from backends import ScriptedBackend
from engine import Instruction, SimpleContext, stream_with_chunking
from engine.core import telemetry

def telemetry_calls(n):
    calls = [0, 0]
    def profile(frame, event, arg):
        if event == "call":
            calls[0] += 1
            name = frame.f_code.co_filename
            if "telemetry" in name.rsplit("/", 1)[-1] or "/opentelemetry/" in name:
                calls[1] += 1
    async def run():
        backend = ScriptedBackend(["word "] * n)
        result = await stream_with_chunking(Instruction("hi"), backend, SimpleContext(), chunking="sentence")
        sys.setprofile(profile)
        await result.acomplete()
        sys.setprofile(None)
    sys.setprofile(profile)
    asyncio.run(run())
    sys.setprofile(None)
    return calls

telemetry_calls(20)  # warm-up: first-time work (caches, lazy imports) is not per delta
small, large = telemetry_calls(20), telemetry_calls(400)
print(telemetry.active, small[1], large[1], large[0] - small[0], any(m.startswith("opentelemetry") for m in sys.modules))
"""

BLOCK_OTEL = """
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ImportError("blocked for the test: " + name)
sys.meta_path.insert(0, Block())
"""


def test_off_imports_nothing_of_opentelemetry_and_adds_no_call_per_delta() -> None:
    active, small, large, _, imported = run_isolated(COUNT_CALLS.format(block="")).split()
    assert (active, imported) == ("False", "False")
    assert small == large  # no telemetry call grows with the deltas
    assert int(small) <= 8  # a few per run: the run scope


def test_not_installed_with_the_switch_set_warns_once_and_stays_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RXLLM_TRACES_ENABLED", "1")
    script = COUNT_CALLS.format(block=BLOCK_OTEL).replace(
        "import asyncio, sys",
        "import asyncio, sys, logging\nlogging.basicConfig(level=logging.WARNING, stream=sys.stdout)",
    )
    lines = run_isolated(script).splitlines()
    assert len(lines) == 2 and "rxllm[otel]" in lines[0], lines
    active, small, large, _, imported = lines[1].split()
    assert (active, imported) == ("False", "False")
    assert small == large


def test_on_adds_no_call_per_delta_either() -> None:
    """Switched on, the work is per run, generation, chunk and check: the same deltas with
    one chunk cost the same number of calls more, whatever their count."""
    script = (
        COUNT_CALLS.format(block="")
        .replace(
            "small, large = ",
            "from engine.core import telemetry as t\n"
            "off_small, off_large = telemetry_calls(20), telemetry_calls(400)\n"
            "t.enable()\n"
            "telemetry_calls(20)\n"
            "small, large = ",
        )
        .replace(
            "print(telemetry.active, small[1], large[1], large[0] - small[0],",
            "print(telemetry.active, small[1], large[1], (large[0] - small[0]) - (off_large[0] - off_small[0]),",
        )
    )
    active, small, large, extra_per_delta, _ = run_isolated(script).split()
    assert active == "True"
    assert small == large and int(small) > 0
    assert int(extra_per_delta) == 0


COUNT_CALLS_PER_CHUNK = r"""
import asyncio, sys
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from backends import ScriptedBackend
from engine import Instruction, PartialValidationResult, Requirement, SimpleContext, stream_with_chunking
from engine.core import telemetry
from engine.core.telemetry_otel import runs

# Every check counts as quick: on a loaded machine the OS may stop one for longer than the
# quick-check bound, and a slow check is recorded in a histogram (~50 calls), as it should be.
runs.FAST_CHECK_SECONDS = float("inf")

provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
trace.set_tracer_provider(provider)
metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))

class Quick(Requirement):
    async def stream_validate(self, chunk, *, backend, ctx):
        return PartialValidationResult("unknown")

# Only rxllm's and OpenTelemetry's own frames: the event loop's vary with how the run's
# wake-ups group into loop iterations, which a loaded machine changes from run to run.
OURS = ("/engine/", "/operators/", "/backends/", "/opentelemetry/")

def calls(chunks):
    count = [0]
    def profile(frame, event, arg):
        if event == "call" and any(part in frame.f_code.co_filename for part in OURS):
            count[0] += 1
    async def run():
        backend = ScriptedBackend([f"Sentence {i}. " for i in range(chunks)])
        result = await stream_with_chunking(
            Instruction("hi"), backend, SimpleContext(), requirements=[Quick("a"), Quick("b"), Quick("c")]
        )
        sys.setprofile(profile)
        await result.acomplete()
        sys.setprofile(None)
    asyncio.run(run())
    return count[0]

def per_chunk():
    calls(10)  # warm-up
    return (calls(120) - calls(20)) / 100

off = per_chunk()
telemetry.enable(traces=True, metrics=True)
on = per_chunk()
print(off, on)
"""


def test_on_a_chunk_of_quick_checks_costs_one_call_per_check_and_none_per_chunk() -> None:
    """Traces and metrics on, a chunk with three quick checks costs three Python calls more than
    off: the timing of each check. Nothing is recorded in the SDK per chunk (one histogram
    record is ~50 calls: the time per chunk is one value per run, quick checks are counted),
    and the chunk's events are not handled one by one: the run's events are read when it ends."""
    off, on = map(float, run_isolated(COUNT_CALLS_PER_CHUNK).split())
    assert on - off <= 3.5, (off, on)  # a call per event would make 5, a record per chunk over 50


def test_the_switch_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RXLLM_METRICS_ENABLED", "true")
    out = run_isolated(
        "import sys\nfrom engine.core import telemetry\n"
        "s = telemetry.settings()\nprint(telemetry.active, s.traces, s.metrics)"
    )
    assert out == "True False True"
    assert sys.modules.get("opentelemetry") is not None  # this test process has it; the child needs it


# -- sessions and HTTP retries ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_each_session_call_is_a_span_over_its_generations(otel: Otel) -> None:
    from engine import start_session

    m = start_session("scripted", "tiny")
    m.backend.deltas = ["All good."]  # type: ignore[attr-defined]
    await m.ainstruct("Say something", requirements=[Words("zzz")])
    await m.achat("hello")
    spans = otel.finished()
    calls = [s for s in spans if s.name.startswith("rxllm.session")]
    assert sorted(dict(s.attributes or {})["rxllm.session.call"] for s in calls) == ["chat", "generate"]
    requests = [s for s in spans if s.name.startswith("chat")]
    assert len(requests) == 2
    call_ids = {s.context.span_id for s in calls}
    assert all(r.parent is not None and r.parent.span_id in call_ids for r in requests)
    assert otel.open.open == {}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "options", [{}, {"strategy": None, "await_result": True}], ids=["sampled", "single-generation"]
)
async def test_a_session_call_that_fails_counts_its_error_once(otel: Otel, options: dict[str, Any]) -> None:
    from engine import start_session

    secret = "sk-abcdefghijklmnop1234"
    backend = ScriptedBackend(
        ["cut"], error=ConnectionError(f"server went away (key {secret})"), model_id="tiny"
    )
    m = start_session(backend)
    with pytest.raises(ConnectionError):
        await m.ainstruct("Say something", **options)
    call = one(otel.finished(), "rxllm.session")
    assert dict(call.attributes or {})["error.type"] == "ConnectionError"
    assert all(secret not in e["exception.message"] for e in events(call, "exception"))
    found = collect(otel)
    [error] = found["rxllm.errors"]
    assert error.value == 1
    assert dict(error.attributes) == {
        "error.type": "ConnectionError",
        "gen_ai.provider.name": "scripted",
        "gen_ai.request.model": "tiny",
    }
    assert total(found["rxllm.request.duration"], **{"error.type": "ConnectionError"}) == 1


@pytest.mark.asyncio
async def test_an_error_passing_out_of_nested_session_calls_counts_once(otel: Otel) -> None:
    from engine import start_session
    from engine.sampling import SamplingStrategy

    inner = start_session(ScriptedBackend(["cut"], error=ConnectionError("gone"), model_id="judge"))

    class AsksAnotherSession(SamplingStrategy):
        async def sample(self, action: Any, **_: Any) -> Any:
            return await inner.ainstruct("judge this", strategy=None, await_result=True)  # raises

    outer = start_session(ScriptedBackend(["Fine."], model_id="writer"))
    with pytest.raises(ConnectionError):
        await outer.ainstruct("Say something", strategy=AsksAnotherSession())
    calls = [s for s in otel.finished() if s.name.startswith("rxllm.session")]
    assert len(calls) == 2 and all(dict(s.attributes or {})["error.type"] == "ConnectionError" for s in calls)
    assert total(collect(otel)["rxllm.errors"], **{"error.type": "ConnectionError"}) == 1


@pytest.mark.asyncio
async def test_http_retries_are_events_on_the_request_span_with_status_and_reason(otel: Otel) -> None:
    from backends import OpenAIBackend
    from tests.fake_servers import FakeOpenAIServer, Reply

    async with (
        FakeOpenAIServer() as server,
        OpenAIBackend(
            "m", base_url=server.url, api_key="sk-secret-123456789", retries=2, retry_backoff=0.01
        ) as backend,
    ):
        server.enqueue(Reply(status=503, error="overloaded"), Reply(deltas=["Hello. ", "World."]))
        result = await stream_with_chunking(Instruction("hi"), backend, SimpleContext())
        await result.acomplete()
    spans = otel.finished()
    request = one(spans, "chat")
    attributes = dict(request.attributes or {})
    assert attributes["http.response.status_code"] == 200
    assert attributes["rxllm.request.retries"] == 1
    assert attributes["gen_ai.usage.input_tokens"] == 7 and attributes["gen_ai.usage.output_tokens"] == 2
    [retry] = events(request, "rxllm.retry")
    assert retry["rxllm.retry.attempt"] == 1 and "503" in retry["rxllm.retry.reason"]
    run = one(spans, "rxllm.run")
    assert dict(run.attributes or {})["gen_ai.usage.output_tokens"] == 2
    assert dict(run.attributes or {})["gen_ai.provider.name"] == "openai"
    found = collect(otel)
    assert total(found["rxllm.retries"], **{"rxllm.retry.kind": "http"}) == 1
    assert total(found["rxllm.tokens.output"]) == 2 and total(found["rxllm.tokens.input"]) == 7


# -- the CLI sets up exporters from the environment ----------------------------------------------


def _demo(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RXLLM_", "OTEL_"))}
    return subprocess.run(
        [sys.executable, "-X", "dev", "-m", "engine", "demo", "--delay", "0", "--plain", "--verbose"],
        cwd=Path(__file__).resolve().parent.parent.parent,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_cli_prints_spans_with_rxllm_traces_console() -> None:
    done = _demo({"RXLLM_TRACES_CONSOLE": "1", "OTEL_SERVICE_NAME": "demo-svc"})
    assert done.returncode == 0, done.stderr
    assert '"name": "rxllm.run simulator"' in done.stderr
    assert '"name": "chat simulator"' in done.stderr
    assert '"service.name": "demo-svc"' in done.stderr


def test_the_cli_without_telemetry_variables_prints_no_span() -> None:
    done = _demo({})
    assert done.returncode == 0, done.stderr
    assert '"name": "rxllm.run' not in done.stderr
    assert "rxllm: engine.core.thunk: cancelled the generation of scripted" in done.stderr  # --verbose
