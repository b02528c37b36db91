"""Each pipeline operator in isolation, driven by a Subject on the real asyncio loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import reactivex
from reactivex import Observable
from reactivex.subject import Subject

from engine import (
    ChunkEvent,
    CompletedEvent,
    ErrorEvent,
    FullValidationEvent,
    PartialValidationResult,
    QuickCheckEvent,
    Requirement,
    SimpleContext,
    StreamingDoneEvent,
    ValidationResult,
)
from operators import (
    Chunk,
    ChunkVerdict,
    FinalValidation,
    SentenceChunking,
    StreamingDone,
    cancel_on_fail,
    chunk,
    final_validation,
    to_events,
    validate,
)
from tests.doubles import ScriptedRequirement

CTX = SimpleContext()


class Recorder:
    """Collects what an observable emits."""

    def __init__(self, observable: Observable[Any]) -> None:
        self.items: list[Any] = []
        self.error: Exception | None = None
        self.completed = False
        self.done = asyncio.Event()
        self.subscription = observable.subscribe(self.items.append, self._on_error, self._on_completed)

    def _on_error(self, exc: Exception) -> None:
        self.error = exc
        self.done.set()

    def _on_completed(self) -> None:
        self.completed = True
        self.done.set()

    async def wait(self) -> None:
        await asyncio.wait_for(self.done.wait(), 5)


def chunks_of(*texts: str) -> list[Chunk]:
    out, pos = [], 0
    for i, t in enumerate(texts):
        out.append(Chunk(t, i, pos, pos + len(t)))
        pos += len(t) + 1
    return out


# -- chunk ----------------------------------------------------------------------


def test_chunk_cuts_deltas_and_flushes_only_on_completion() -> None:
    subject: Subject[str] = Subject()
    got: list[Chunk] = []
    subject.pipe(chunk("sentence")).subscribe(got.append)
    for delta in ["Hel", "lo. Wor", "ld! tail"]:
        subject.on_next(delta)
    assert [c.text for c in got] == ["Hello.", "World!"]
    subject.on_completed()
    assert [c.text for c in got] == ["Hello.", "World!", "tail"]


def test_chunk_discards_the_fragment_on_error() -> None:
    subject: Subject[str] = Subject()
    got: list[Chunk] = []
    errors: list[Exception] = []
    subject.pipe(chunk(SentenceChunking())).subscribe(got.append, errors.append)
    subject.on_next("Done. partial")
    subject.on_error(OSError("x"))
    assert [c.text for c in got] == ["Done."] and isinstance(errors[0], OSError)


def test_chunk_turns_a_broken_strategy_into_on_error_after_earlier_chunks() -> None:
    class Broken(SentenceChunking):
        def split(self, accumulated_text: str) -> list[str]:
            return ["???"] if "bad" in accumulated_text else super().split(accumulated_text)

    subject: Subject[str] = Subject()
    got: list[Chunk] = []
    errors: list[Exception] = []
    subject.pipe(chunk(Broken())).subscribe(got.append, errors.append)
    subject.on_next("Fine. ")
    subject.on_next("bad")
    assert [c.text for c in got] == ["Fine."]
    assert isinstance(errors[0], ValueError) and "Broken" in str(errors[0])


def test_chunk_with_a_virtual_time_scheduler() -> None:
    # Pure synchronous operators compose with reactivex's marble-free test scheduler too.
    from reactivex.testing import ReactiveTest, TestScheduler

    scheduler = TestScheduler()
    source = scheduler.create_hot_observable(
        ReactiveTest.on_next(210, "A. B"), ReactiveTest.on_next(220, ". C"), ReactiveTest.on_completed(230)
    )
    result = scheduler.start(lambda: source.pipe(chunk("sentence")))
    assert [(m.time, m.value.value.text) for m in result.messages if m.value.kind == "N"] == [
        (210, "A."),
        (220, "B."),
        (230, "C"),
    ]


# -- validate -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_validate_runs_the_requirements_of_one_chunk_in_parallel() -> None:
    both_started = asyncio.Event()
    started = 0

    class Rendezvous(Requirement):
        async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
            nonlocal started
            started += 1
            if started == 2:
                both_started.set()
            # Sequential checking would wait here forever: the other one never starts.
            await asyncio.wait_for(both_started.wait(), 2)
            return PartialValidationResult("pass")

    rec = Recorder(
        reactivex.from_iterable(chunks_of("x")).pipe(
            validate([Rendezvous(), Rendezvous()], backend=None, ctx=CTX)
        )
    )
    await rec.wait()
    assert rec.completed and [v.results for v in rec.items] == [(PartialValidationResult("pass"),) * 2]


@pytest.mark.asyncio
async def test_validate_checks_chunks_strictly_in_order() -> None:
    log: list[str] = []

    class Ordered(Requirement):
        async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
            log.append(f"start {chunk}")
            await asyncio.sleep(0.01 if chunk == "a" else 0)
            log.append(f"end {chunk}")
            return PartialValidationResult("pass")

    subject: Subject[Chunk] = Subject()
    rec = Recorder(subject.pipe(validate([Ordered()], backend=None, ctx=CTX)))
    for c in chunks_of("a", "b", "c"):
        subject.on_next(c)
    subject.on_completed()
    await rec.wait()
    assert log == ["start a", "end a", "start b", "end b", "start c", "end c"]
    assert [v.chunk.text for v in rec.items] == ["a", "b", "c"]


@pytest.mark.asyncio
async def test_validate_stops_at_the_first_failure() -> None:
    req = ScriptedRequirement({"b": "fail"})
    subject: Subject[Chunk] = Subject()
    rec = Recorder(subject.pipe(validate([req], backend=None, ctx=CTX)))
    for c in chunks_of("a", "b", "c", "d"):
        subject.on_next(c)
    await asyncio.sleep(0.01)
    subject.on_next(chunks_of("e")[0])
    subject.on_completed()
    await rec.wait()
    assert req.seen == ["a", "b"]  # nothing after the failure is validated
    assert [(v.chunk.text, v.passed) for v in rec.items] == [("a", True), ("b", False)]
    assert rec.items[-1].failures == [(req, PartialValidationResult("fail", reason="scripted"))]


@pytest.mark.asyncio
async def test_a_fail_decides_at_once_and_cancels_slower_siblings() -> None:
    fast = ScriptedRequirement({"x": "fail"}, name="fast")
    slow = ScriptedRequirement(delay=5, name="slow")
    rec = Recorder(
        reactivex.from_iterable(chunks_of("x")).pipe(validate([slow, fast], backend=None, ctx=CTX))
    )
    await rec.wait()
    verdict = rec.items[0]
    assert not verdict.passed
    assert verdict.results == (
        PartialValidationResult("unknown", reason="cancelled"),
        PartialValidationResult("fail", reason="scripted"),
    )
    await asyncio.sleep(0)
    assert slow.cancelled == ["x"] and slow.finished == []


@pytest.mark.asyncio
async def test_a_raising_validator_cancels_its_siblings_and_errors_after_earlier_verdicts() -> None:
    class Raises(Requirement):
        async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
            await asyncio.sleep(0)  # the sibling has started chunk "b" by the time this raises
            if chunk == "b":
                raise ZeroDivisionError("validator bug")
            return PartialValidationResult("pass")

    slow = ScriptedRequirement(delay=5)
    subject: Subject[Chunk] = Subject()
    rec = Recorder(subject.pipe(validate([Raises(), slow], backend=None, ctx=CTX)))
    slow.delay = 0
    subject.on_next(chunks_of("a")[0])
    await asyncio.sleep(0.01)
    slow.delay = 5
    subject.on_next(chunks_of("a", "b")[1])
    await rec.wait()
    assert [v.chunk.text for v in rec.items] == ["a"]
    assert isinstance(rec.error, ZeroDivisionError)
    assert slow.cancelled == ["b"]


@pytest.mark.asyncio
async def test_a_wrong_result_type_is_a_clear_type_error() -> None:
    class Sloppy(Requirement):
        async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> Any:
            return "pass"

    rec = Recorder(
        reactivex.from_iterable(chunks_of("x")).pipe(validate([Sloppy("sloppy")], backend=None, ctx=CTX))
    )
    await rec.wait()
    assert isinstance(rec.error, TypeError)
    assert "Sloppy('sloppy').stream_validate() returned 'pass'" in str(rec.error)
    assert "PartialValidationResult" in str(rec.error)


@pytest.mark.asyncio
async def test_disposing_validate_cancels_the_check_in_flight() -> None:
    slow = ScriptedRequirement(delay=5)
    subject: Subject[Chunk] = Subject()
    rec = Recorder(subject.pipe(validate([slow], backend=None, ctx=CTX)))
    subject.on_next(chunks_of("x")[0])
    await asyncio.sleep(0.01)
    rec.subscription.dispose()
    await asyncio.sleep(0.01)
    assert slow.cancelled == ["x"] and rec.items == []


@pytest.mark.asyncio
async def test_validate_with_no_requirements_passes_every_chunk_synchronously() -> None:
    got: list[ChunkVerdict] = []
    reactivex.from_iterable(chunks_of("a", "b")).pipe(validate([], backend=None, ctx=CTX)).subscribe(
        got.append
    )
    assert [(v.chunk.text, v.passed, v.results) for v in got] == [("a", True, ()), ("b", True, ())]


@pytest.mark.asyncio
async def test_validate_passes_backend_and_ctx_to_validators() -> None:
    seen: list[tuple[Any, Any]] = []

    class Spy(Requirement):
        async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
            seen.append((backend, ctx))
            return PartialValidationResult("pass")

    rec = Recorder(reactivex.from_iterable(chunks_of("a")).pipe(validate([Spy()], backend="B", ctx=CTX)))
    await rec.wait()
    assert seen == [("B", CTX)]


# -- cancel_on_fail ----------------------------------------------------------------


def verdict(text: str, outcome: str) -> ChunkVerdict:
    req = Requirement("r")
    return ChunkVerdict(chunks_of(text)[0], (PartialValidationResult(outcome),), (req,))  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_cancel_on_fail_disposes_upstream_before_it_passes_the_failure_on_and_completes() -> None:
    disposed: list[bool] = []
    subject: Subject[ChunkVerdict] = Subject()
    source = reactivex.using(
        lambda: reactivex.disposable.Disposable(lambda: disposed.append(True)), lambda _: subject
    )
    got: list[ChunkVerdict] = []
    completed: list[bool] = []
    source.pipe(cancel_on_fail()).subscribe(got.append, on_completed=lambda: completed.append(True))
    subject.on_next(verdict("a", "pass"))
    assert not disposed and [v.chunk.text for v in got] == ["a"]
    order: list[str] = []
    disposed_before = lambda v: order.append("verdict" if disposed else "verdict before dispose")  # noqa: E731
    source.pipe(cancel_on_fail()).subscribe(disposed_before)
    subject.on_next(verdict("b", "fail"))
    assert disposed and order == ["verdict"]  # the source is stopped first, in the same call
    assert [v.chunk.text for v in got] == ["a", "b"] and completed
    subject.on_next(verdict("c", "pass"))
    assert len(got) == 2


@pytest.mark.asyncio
async def test_cancel_on_fail_reports_nothing_once_disposed() -> None:
    subject: Subject[ChunkVerdict] = Subject()
    got: list[ChunkVerdict] = []
    subscription = subject.pipe(cancel_on_fail()).subscribe(got.append)
    subscription.dispose()
    subject.on_next(verdict("b", "fail"))
    await asyncio.sleep(0)
    assert got == []


# -- final_validation -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_final_validation_runs_every_requirement_after_a_natural_end() -> None:
    a, b = ScriptedRequirement({"x": "pass"}), ScriptedRequirement()
    rec = Recorder(
        reactivex.from_iterable([verdict("x", "pass")]).pipe(final_validation([a, b], backend=None, ctx=CTX))
    )
    await rec.wait()
    assert isinstance(rec.items[0], ChunkVerdict)
    assert isinstance(rec.items[1], StreamingDone)
    assert rec.items[2] == FinalValidation((ValidationResult(True), ValidationResult(True)))
    assert a.validated == b.validated == 1


@pytest.mark.asyncio
async def test_final_validation_is_skipped_after_a_failure() -> None:
    a = ScriptedRequirement()
    rec = Recorder(
        reactivex.from_iterable([verdict("x", "fail")]).pipe(final_validation([a], backend=None, ctx=CTX))
    )
    await rec.wait()
    assert [type(i) for i in rec.items] == [ChunkVerdict] and a.validated == 0 and rec.completed


@pytest.mark.asyncio
async def test_final_validation_surfaces_a_validator_exception() -> None:
    class Broken(Requirement):
        async def validate(
            self, backend: Any, ctx: Any, *, format: Any = None, model_options: Any = None
        ) -> ValidationResult:
            raise LookupError("judge down")

    rec = Recorder(reactivex.empty().pipe(final_validation([Broken()], backend=None, ctx=CTX)))
    await rec.wait()
    assert isinstance(rec.items[0], StreamingDone) and isinstance(rec.error, LookupError)


# -- to_events -------------------------------------------------------------------------


def test_to_events_maps_a_natural_run() -> None:
    items = [verdict("a", "pass"), StreamingDone(), FinalValidation((ValidationResult(False),))]
    events: list[Any] = []
    reactivex.from_iterable(items).pipe(to_events(lambda: "a tail")).subscribe(events.append)
    assert [type(e) for e in events] == [
        QuickCheckEvent,
        ChunkEvent,
        StreamingDoneEvent,
        FullValidationEvent,
        CompletedEvent,
    ]
    assert events[2].full_text == "a tail" and events[3].passed is False
    assert events[4].success is True and events[4].full_text == "a tail"


def test_to_events_after_a_failure_reports_the_span_of_emitted_chunks() -> None:
    first = ChunkVerdict(Chunk("One.", 0, 0, 4), (PartialValidationResult("pass"),), (Requirement(),))
    second = ChunkVerdict(Chunk("Two.", 1, 5, 9), (PartialValidationResult("fail"),), (Requirement(),))
    events: list[Any] = []
    reactivex.from_iterable([first, second]).pipe(to_events(lambda: "One. Two. Thr")).subscribe(events.append)
    assert [type(e) for e in events] == [QuickCheckEvent, ChunkEvent, QuickCheckEvent, CompletedEvent]
    assert events[-1].success is False and events[-1].full_text == "One."


def test_to_events_without_requirements_emits_no_quick_checks() -> None:
    events: list[Any] = []
    plain = ChunkVerdict(Chunk("a", 0, 0, 1), (), ())
    reactivex.from_iterable([plain]).pipe(to_events(lambda: "a")).subscribe(events.append)
    assert [type(e) for e in events] == [ChunkEvent, CompletedEvent]


def test_to_events_turns_an_error_into_events_then_passes_it_on() -> None:
    events: list[Any] = []
    errors: list[Exception] = []
    reactivex.throw(OSError("reset")).pipe(to_events(lambda: "got this")).subscribe(
        events.append, errors.append
    )
    assert [type(e) for e in events] == [ErrorEvent, CompletedEvent]
    assert events[0].exception_type == "OSError" and events[0].detail == "reset"
    assert events[1].full_text == "got this" and isinstance(errors[0], OSError)
