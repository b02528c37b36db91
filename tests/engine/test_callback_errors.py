"""No hang and no swallowed error: an exception raised in any callback of a run ends it.

Whatever stage raises (the backend's source, a non-text delta, the chunker, a validator,
cancel_on_fail, final validation, to_events, the result's own bookkeeping, a subscriber
of ``result.observable``), the run ends with ``ErrorEvent`` then ``CompletedEvent(success=False)``,
the exception is raised exactly once (by whichever of ``astream()``/``acomplete()`` reads
it first), the generation is stopped, nothing hangs, and asyncio logs nothing
(tests/conftest.py fails a test that makes it log).

A stage's fault is injected by wrapping it (in the module the assembly takes it from) so
that the call it makes to pass one chosen item on raises: the exception surfaces inside
that stage's own callback, as an exception of its own code would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from reactivex import Observable, abc

import engine.assembly
import engine.attempts
import engine.result
from backends import ScriptedBackend
from engine import (
    ChunkEvent,
    CompletedEvent,
    ErrorEvent,
    Instruction,
    PartialValidationResult,
    Requirement,
    SimpleContext,
    StreamEvent,
    StreamingDoneEvent,
    ValidationResult,
    stream_with_chunking,
)
from operators.verdicts import ChunkVerdict, FinalValidation, StreamingDone
from tests.doubles import OddBackend

ACTION = Instruction("Write three sentences.")
TEXT = "First one. Second one! Third one? trailing bit"
DELTAS = [TEXT[i : i + 3] for i in range(0, len(TEXT), 3)]


class Injected(Exception):
    """The fault every test injects."""


class Unknown(Requirement):
    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        return PartialValidationResult("unknown")

    async def validate(
        self, backend: Any, ctx: Any, *, format: Any = None, model_options: Any = None
    ) -> ValidationResult:
        return ValidationResult(True)


def exploding(operator_factory: Callable[..., Any], when: Callable[[Any], bool]) -> Callable[..., Any]:
    """*operator_factory*, whose operator raises :class:`Injected` while passing on the first item
    that matches *when* (once): the exception is raised inside the stage's own callback."""

    def factory(*args: Any, **kwargs: Any) -> Callable[[Observable[Any]], Observable[Any]]:
        stage = operator_factory(*args, **kwargs)

        def operator(source: Observable[Any]) -> Observable[Any]:
            def subscribe(observer: abc.ObserverBase[Any], scheduler: Any = None) -> abc.DisposableBase:
                fired = False

                def on_next(item: Any) -> None:
                    nonlocal fired
                    if not fired and when(item):
                        fired = True
                        raise Injected(f"injected while passing {type(item).__name__}")
                    observer.on_next(item)

                return stage(source).subscribe(on_next, observer.on_error, observer.on_completed)

            return Observable(subscribe)

        return operator

    return factory


def is_chunk(text: str | None = None) -> Callable[[Any], bool]:
    return lambda item: getattr(item, "text", None) == text if text is not None else hasattr(item, "text")


def is_verdict_of(text: str) -> Callable[[Any], bool]:
    return lambda item: isinstance(item, ChunkVerdict) and item.chunk.text == text


def _home_of(stage: str) -> Any:
    """The module whose global *stage* the assembly calls (``validate`` is applied, with the
    chunking, by ``engine.attempts.checked_chunks``, shared by every generation of a run)."""
    return engine.attempts if stage == "validate" else engine.assembly


# (stage patched in engine.assembly, which item makes it raise, with requirements?)
STAGES = {
    "chunk/first": ("chunk", is_chunk(), True),
    "chunk/flushed": ("chunk", is_chunk("trailing bit"), True),
    "chunk/no-requirements": ("chunk", is_chunk("Second one!"), False),
    "validate/first": ("validate", is_verdict_of("First one."), True),
    "validate/flushed": ("validate", is_verdict_of("trailing bit"), True),
    "validate/no-requirements": ("validate", is_verdict_of("Second one!"), False),
    "cancel_on_fail/first": ("cancel_on_fail", is_verdict_of("First one."), True),
    "cancel_on_fail/flushed": ("cancel_on_fail", is_verdict_of("trailing bit"), True),
    "final_validation/verdict": ("final_validation", is_verdict_of("Second one!"), True),
    "final_validation/streaming-done": ("final_validation", lambda i: isinstance(i, StreamingDone), True),
    "final_validation/final-results": ("final_validation", lambda i: isinstance(i, FinalValidation), True),
    "final_validation/no-requirements": ("final_validation", lambda i: isinstance(i, StreamingDone), False),
    "to_events/chunk": ("to_events", lambda e: isinstance(e, ChunkEvent), True),
    "to_events/streaming-done": ("to_events", lambda e: isinstance(e, StreamingDoneEvent), True),
    "to_events/completed": ("to_events", lambda e: isinstance(e, CompletedEvent), True),
    "to_events/no-requirements": ("to_events", lambda e: isinstance(e, CompletedEvent), False),
}


def assert_ended_by(events: list[StreamEvent], error_type: type[Exception]) -> None:
    assert isinstance(events[-1], CompletedEvent) and not events[-1].success
    assert isinstance(events[-2], ErrorEvent) and events[-2].exception_type == error_type.__name__
    assert sum(isinstance(e, CompletedEvent) for e in events) == 1
    assert sum(isinstance(e, ErrorEvent) for e in events) == 1


async def assert_raised_once(result: Any, error_type: type[Exception]) -> None:
    with pytest.raises(error_type):
        await asyncio.wait_for(result.acomplete(), 5)
    await asyncio.wait_for(result.acomplete(), 5)  # once: the second call returns
    assert not result.completed


async def assert_generation_stopped(backend: ScriptedBackend) -> None:
    await asyncio.sleep(0.01)
    record = backend.generations[0]
    sent = record.deltas_sent
    await asyncio.sleep(0.02)
    assert record.deltas_sent == sent  # nothing keeps producing
    assert record.finished_at is not None or record.cancelled


@pytest.mark.asyncio
@pytest.mark.parametrize("case", list(STAGES))
async def test_an_exception_inside_a_stage_ends_the_run(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    stage, when, with_requirements = STAGES[case]
    home = _home_of(stage)
    monkeypatch.setattr(home, stage, exploding(getattr(home, stage), when))
    backend = ScriptedBackend(DELTAS, delay=0.001)
    reqs = [Unknown("unknown")] if with_requirements else None
    result = await stream_with_chunking(ACTION, backend, SimpleContext(), requirements=reqs)
    events = await asyncio.wait_for(collect(result), 5)
    assert_ended_by(events, Injected)
    await assert_raised_once(result, Injected)
    await assert_generation_stopped(backend)


@pytest.mark.asyncio
@pytest.mark.parametrize("case", ["chunk/first", "validate/first", "to_events/chunk", "to_events/completed"])
async def test_astream_raises_an_injected_exception_once(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    stage, when, _ = STAGES[case]
    home = _home_of(stage)
    monkeypatch.setattr(home, stage, exploding(getattr(home, stage), when))
    result = await stream_with_chunking(
        ACTION, ScriptedBackend(DELTAS), SimpleContext(), requirements=[Unknown()]
    )
    with pytest.raises(Injected):
        async for _ in result.astream():
            pass
    await asyncio.wait_for(result.acomplete(), 5)  # already raised by astream


async def collect(result: Any) -> list[StreamEvent]:
    return [e async for e in result.events()]


@pytest.mark.asyncio
async def test_the_backend_raising_ends_the_run() -> None:
    backend = ScriptedBackend(DELTAS, delay=0.001, error=Injected("source"))
    result = await stream_with_chunking(ACTION, backend, SimpleContext(), requirements=[Unknown()])
    events = await asyncio.wait_for(collect(result), 5)
    assert_ended_by(events, Injected)
    await assert_raised_once(result, Injected)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "bad", [42, b"raw bytes", None, {"content": "x"}], ids=["int", "bytes", "None", "dict"]
)
async def test_a_non_text_delta_ends_the_run_with_a_type_error_naming_the_backend(bad: object) -> None:
    backend = OddBackend(["Fine. ", bad, "never"])
    result = await stream_with_chunking(ACTION, backend, SimpleContext(), requirements=[Unknown()])  # type: ignore[arg-type]
    events = await asyncio.wait_for(collect(result), 5)
    assert_ended_by(events, TypeError)
    assert [e.text for e in events if isinstance(e, ChunkEvent)] == ["Fine."]  # nothing received is lost
    detail = next(e for e in events if isinstance(e, ErrorEvent)).detail
    assert "'OddBackend'" in detail and f"type {type(bad).__name__}" in detail and "must be str" in detail
    with pytest.raises(TypeError, match="OddBackend"):
        await asyncio.wait_for(result.acomplete(), 5)
    assert backend.closed


@pytest.mark.asyncio
async def test_a_non_text_delta_does_not_hang_avalue() -> None:
    thunk, _ = await OddBackend(["Fine. ", 3.5, "never"]).generate_from_context(ACTION, SimpleContext())
    with pytest.raises(TypeError, match="type float"):
        await asyncio.wait_for(thunk.avalue(), 5)


@pytest.mark.asyncio
async def test_the_results_own_bookkeeping_raising_ends_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    record = engine.result.StreamChunkingResult._record

    def faulty(self: Any, event: StreamEvent) -> None:
        if isinstance(event, ChunkEvent) and event.chunk_index == 1:
            raise Injected("bookkeeping")
        record(self, event)

    monkeypatch.setattr(engine.result.StreamChunkingResult, "_record", faulty)
    backend = ScriptedBackend(["tok. "] * 1000, delay=0.001)
    result = await stream_with_chunking(ACTION, backend, SimpleContext(), requirements=[Unknown()])
    events = await asyncio.wait_for(collect(result), 5)
    assert_ended_by(events, Injected)
    assert [e.chunk_index for e in events if isinstance(e, ChunkEvent)] == [0]
    await assert_raised_once(result, Injected)
    await assert_generation_stopped(backend)
    assert backend.generations[0].cancelled


@pytest.mark.asyncio
@pytest.mark.parametrize("with_on_error", [True, False])
async def test_a_subscriber_of_the_observable_raising_ends_the_run(with_on_error: bool) -> None:
    backend = ScriptedBackend(["tok. "] * 1000, delay=0.001)
    result = await stream_with_chunking(ACTION, backend, SimpleContext(), requirements=[Unknown()])
    seen_errors: list[Exception] = []

    def on_next(event: StreamEvent) -> None:
        if isinstance(event, ChunkEvent) and event.chunk_index == 2:
            raise Injected("subscriber")

    if with_on_error:
        result.observable.subscribe(on_next, seen_errors.append)
    else:
        result.observable.subscribe(on_next)  # reactivex's default on_error re-raises: still one error
    events = await asyncio.wait_for(collect(result), 5)
    assert_ended_by(events, Injected)
    await assert_raised_once(result, Injected)
    await assert_generation_stopped(backend)
    if with_on_error:
        assert [type(e) for e in seen_errors] == [Injected]  # the subscriber's own chain ended with it


@pytest.mark.asyncio
async def test_a_subscriber_raising_on_the_last_event_adds_no_second_completed_event() -> None:
    result = await stream_with_chunking(
        ACTION, ScriptedBackend(DELTAS), SimpleContext(), requirements=[Unknown()]
    )
    seen: list[Exception] = []

    def on_next(event: StreamEvent) -> None:
        if isinstance(event, CompletedEvent):
            raise Injected("on the last event")

    result.observable.subscribe(on_next, seen.append)
    events = await asyncio.wait_for(collect(result), 5)
    assert sum(isinstance(e, CompletedEvent) for e in events) == 1 and isinstance(events[-1], CompletedEvent)
    with pytest.raises(Injected):
        await result.acomplete()
    await result.acomplete()
    assert [type(e) for e in seen] == [Injected]
