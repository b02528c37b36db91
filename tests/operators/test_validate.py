"""Validation scheduling: eager checks, the fail-fast stop, requirements that don't wait
for each other, per-requirement concurrency and chunking, deadlines and error policies.

Everything runs ``stream_with_chunking`` on the ``ScriptedBackend`` (a real asyncio task
reading a generator, as the HTTP backends do), except where an operator is driven alone.
"""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from typing import Any

import pytest
from reactivex.subject import Subject

from backends import ScriptedBackend
from engine import (
    ChunkEvent,
    ErrorEvent,
    FullValidationEvent,
    PartialValidationResult,
    QuickCheckEvent,
    Requirement,
    SimpleContext,
    StreamEvent,
    ValidationResult,
    stream_with_chunking,
)
from engine.core.components import CBlock
from operators import Chunk, ChunkVerdict, validate

PASS = PartialValidationResult("pass")
UNKNOWN = PartialValidationResult("unknown")
SENTENCES = ["One is here. ", "Two is here. ", "Three is here. ", "Four is here. ", "Five is here."]


def deltas_of(sentences: list[str], size: int = 4) -> list[str]:
    text = "".join(sentences)
    return [text[i : i + size] for i in range(0, len(text), size)]


class Check(Requirement):
    """Answers per chunk number (1-based) from *answers*; awaits *delay* (or one loop turn with
    ``delay=0``) unless ``sync``; records what it saw, finished and had cancelled."""

    def __init__(
        self,
        name: str,
        answers: dict[int, str] | None = None,
        *,
        delay: float | None = None,
        slow_on: int | None = None,
        raises_on: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, **kwargs)
        self.answers = answers or {}
        self.delay = delay
        self.slow_on = slow_on
        self.raises_on = raises_on
        self.seen: list[str] = []
        self.finished: list[str] = []
        self.cancelled: list[str] = []

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        self.seen.append(chunk)
        n = len(self.seen)
        if self.delay is not None and (self.slow_on is None or self.slow_on == n):
            try:
                await asyncio.sleep(self.delay)
            except asyncio.CancelledError:
                self.cancelled.append(chunk)
                raise
        if n == self.raises_on:
            raise ZeroDivisionError(f"{self.description} broke on chunk {n}")
        self.finished.append(chunk)
        outcome = self.answers.get(n, "pass")
        return PartialValidationResult(outcome, reason=f"{self.description} says {outcome}")  # type: ignore[arg-type]

    async def validate(self, backend: Any, ctx: Any, **kwargs: Any) -> ValidationResult:
        return ValidationResult(True)


async def run(
    reqs: list[Requirement], deltas: list[str] | None = None, *, delay: float = 0.0, **kwargs: Any
) -> tuple[Any, list[StreamEvent], ScriptedBackend]:
    backend = ScriptedBackend(deltas if deltas is not None else deltas_of(SENTENCES), delay=delay)
    result = await stream_with_chunking(CBlock("q"), backend, SimpleContext(), requirements=reqs, **kwargs)
    events = [e async for e in result.events()]
    return result, events, backend


def kinds(events: list[StreamEvent]) -> list[str]:
    out = []
    for e in events:
        if isinstance(e, QuickCheckEvent):
            out.append(f"Q{e.chunk_index}{'' if e.passed else '!'}")
        elif isinstance(e, ChunkEvent):
            out.append(f"C{e.chunk_index}")
        else:
            out.append(type(e).__name__)
    return out


def results_of(events: list[StreamEvent], index: int) -> list[tuple[str, str | None]]:
    (event,) = [e for e in events if isinstance(e, QuickCheckEvent) and e.chunk_index == index]
    return [(r.success, r.reason) for r in event.results]


# -- the fail-fast stop ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_check_that_answers_at_once_stops_the_producer_before_it_sends_another_delta() -> None:
    # delay=0: the producer yields to the loop between deltas, so any turn spent between the
    # verdict and the stop would let it send more.
    fails_second = Check("strict", {2: "fail"})
    result, events, backend = await run([fails_second])
    (generation,) = backend.generations
    text = "".join(SENTENCES)
    sent = "".join(deltas_of(SENTENCES)[: generation.deltas_sent])
    # The second sentence ends inside the delta that completed it: nothing after that delta.
    assert sent.endswith(text[: len(sent)][-4:]) and len(sent) < len(SENTENCES[0] + SENTENCES[1]) + 4
    assert generation.cancelled_at is not None
    assert kinds(events) == ["Q0", "C0", "Q1!", "CompletedEvent"]
    assert result.completed is False and result.full_text == SENTENCES[0].strip()


class _Marks(Requirement):
    """Fails the second chunk without suspending; records the verdict and the next loop turn."""

    def __init__(self, order: list[str]) -> None:
        super().__init__("marks")
        self.order = order
        self.seen = 0

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        self.seen += 1
        if self.seen < 2:
            return PASS
        self.order.append("verdict")
        asyncio.get_running_loop().call_soon(self.order.append, "next turn")
        return PartialValidationResult("fail", reason="second")


class _SourceBackend:
    """A backend whose generation is the async generator *produce(order)*."""

    def __init__(self, produce: Any, order: list[str]) -> None:
        self.produce, self.order = produce, order

    async def generate_from_context(self, action: Any, ctx: Any, **kwargs: Any) -> Any:
        from engine.core.asyncrx import from_async_iterable
        from engine.core.thunk import ModelOutputThunk

        order = self.order

        class Recorded(ModelOutputThunk[str]):
            def cancel(self, error: Exception | None = None) -> None:
                first = self.generation.cancel_requested_at is None
                super().cancel(error)
                if first:  # the run's end calls it again, as a no-op
                    order.append("cancel returned")

        thunk = Recorded(from_async_iterable(lambda: self.produce(order)))
        return thunk, ctx.add(action).add(thunk)


async def _produce_then_record(order: list[str]) -> Any:
    try:
        for delta in deltas_of(SENTENCES):
            await asyncio.sleep(0)
            yield delta
    finally:
        order.append("finally")


async def _produce_with_an_awaiting_cleanup(order: list[str]) -> Any:
    try:
        for delta in deltas_of(SENTENCES):
            await asyncio.sleep(0)
            yield delta
    finally:
        order.append("finally")
        await asyncio.sleep(0.01)  # a cleanup that suspends: the pump's task continues it
        order.append("cleanup done")


async def _order_of_a_failing_run(produce: Any) -> tuple[list[str], list[StreamEvent]]:
    """Run *produce* under a check failing the second chunk; what happened in which order, and the events."""
    order: list[str] = []
    backend = _SourceBackend(produce, order)
    result = await stream_with_chunking(CBlock("q"), backend, SimpleContext(), requirements=[_Marks(order)])
    return order, [e async for e in result.events()]


@pytest.mark.asyncio
async def test_a_failing_verdict_runs_the_producers_finally_inside_its_own_step() -> None:
    # The stop reaches the generator while the pump delivers its delta: the generator is
    # closed right there, so its finally runs inside the thunk's cancel(), before the rest
    # of the step (the verdict's bookkeeping) and before the next loop turn.
    order, events = await _order_of_a_failing_run(_produce_then_record)
    assert order == ["verdict", "finally", "cancel returned", "next turn"]
    assert kinds(events) == ["Q0", "C0", "Q1!", "CompletedEvent"]


@pytest.mark.asyncio
async def test_a_producer_cleanup_that_awaits_is_finished_by_its_task_before_the_run_ends() -> None:
    order, events = await _order_of_a_failing_run(_produce_with_an_awaiting_cleanup)
    assert order[:4] == ["verdict", "finally", "cancel returned", "next turn"]
    await asyncio.sleep(0.05)
    assert order == ["verdict", "finally", "cancel returned", "next turn", "cleanup done"]
    assert kinds(events) == ["Q0", "C0", "Q1!", "CompletedEvent"]
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


@pytest.mark.asyncio
async def test_the_failing_chunk_reports_every_sibling_that_answered_and_both_failures() -> None:
    a = Check("a", {2: "fail"})
    b = Check("b", {2: "fail"})  # answers at once too: both failures are recorded
    c = Check("c")  # answers at once: its real answer
    slow = Check("slow", delay=5, slow_on=2)  # waits on I/O for the failing chunk: cancelled
    result, events, _ = await run([a, b, c, slow], delay=0.001)
    assert kinds(events)[-2:] == ["Q1!", "CompletedEvent"]
    assert results_of(events, 1) == [
        ("fail", "a says fail"),
        ("fail", "b says fail"),
        ("pass", "c says pass"),
        ("unknown", "cancelled"),
    ]
    assert [(req.description, res.success) for req, res in result.streaming_failures] == [
        ("a", "fail"),
        ("b", "fail"),
    ]
    assert slow.cancelled == [SENTENCES[1].strip()]


@pytest.mark.asyncio
async def test_a_sync_and_a_suspending_check_failing_the_same_chunk() -> None:
    sync = Check("sync", {2: "fail"})
    suspending = Check("suspending", {2: "fail"}, delay=0)  # answers a loop turn later
    result, events, backend = await run([sync, suspending], delay=0.001)
    assert kinds(events) == ["Q0", "C0", "Q1!", "CompletedEvent"]
    # The suspending sibling was still waiting when the failure was decided: it was
    # cancelled, and the sync one's failure stands alone.
    assert results_of(events, 1) == [("fail", "sync says fail"), ("unknown", "cancelled")]
    assert [req.description for req, _ in result.streaming_failures] == ["sync"]
    assert backend.generations[0].cancelled_at is not None


@pytest.mark.asyncio
async def test_errors_in_a_sync_and_a_suspending_check_surface_once_with_nothing_left_running() -> None:
    sync = Check("sync", raises_on=2)
    suspending = Check("suspending", raises_on=2, delay=0)
    backend = ScriptedBackend(deltas_of(SENTENCES), delay=0.001)
    result = await stream_with_chunking(
        CBlock("q"), backend, SimpleContext(), requirements=[sync, suspending]
    )
    events = [e async for e in result.events()]
    with pytest.raises(ZeroDivisionError, match="sync broke on chunk 2"):
        await result.acomplete()
    assert kinds(events) == ["Q0", "C0", "ErrorEvent", "CompletedEvent"]
    assert isinstance(events[-2], ErrorEvent)
    assert backend.generations[0].cancelled_at is not None
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]


@pytest.mark.asyncio
async def test_two_checks_raising_on_the_same_chunk_leave_no_unretrieved_exception() -> None:
    first = Check("first", raises_on=2, delay=0)
    second = Check("second", raises_on=2, delay=0)
    backend = ScriptedBackend(deltas_of(SENTENCES), delay=0.001)
    result = await stream_with_chunking(CBlock("q"), backend, SimpleContext(), requirements=[first, second])
    with pytest.raises(ZeroDivisionError, match="broke on chunk 2") as raised:
        await result.acomplete()
    # The run raises one of them; it tells of the other (nothing vanishes), and conftest fails
    # the test on "Task exception was never retrieved" or an error handed to the loop.
    (note,) = raised.value.__notes__
    assert (
        note.startswith("another check also raised on this chunk: ZeroDivisionError:")
        and "broke on chunk 2" in note
    )


# -- requirements do not wait for each other -------------------------------------------


@pytest.mark.asyncio
async def test_a_fast_check_runs_ahead_of_a_slow_judge_and_its_failure_stops_at_once() -> None:
    fast = Check("fast", {4: "fail"})
    judge = Check("judge", delay=0.05)
    started = time.perf_counter()
    result, events, backend = await run([fast, judge], delay=0.001)
    generation = backend.generations[0]
    assert generation.cancelled_at is not None
    # The generation stopped when the fast check failed chunk 3, while the judge was still
    # on an early chunk: well before the judge could have reached chunk 3 (4 x 50 ms).
    assert generation.cancelled_at - started < 0.15
    # Chunks before the failure still leave, in order, once the judge passed them.
    assert kinds(events) == ["Q0", "C0", "Q1", "C1", "Q2", "C2", "Q3!", "CompletedEvent"]
    assert results_of(events, 3) == [("fail", "fast says fail"), ("unknown", "cancelled")]
    assert judge.finished == [s.strip() for s in SENTENCES[:3]]
    assert result.full_text == "".join(SENTENCES[:3]).strip()


@pytest.mark.asyncio
async def test_a_failure_found_by_a_slow_judge_on_an_earlier_chunk_takes_the_place_of_a_later_one() -> None:
    fast = Check("fast", {4: "fail"})
    judge = Check("judge", {2: "fail"}, delay=0.02)
    result, events, _ = await run([fast, judge], delay=0.001)
    assert kinds(events) == ["Q0", "C0", "Q1!", "CompletedEvent"]
    assert [req.description for req, _ in result.streaming_failures] == ["judge"]
    assert result.full_text == SENTENCES[0].strip()


@pytest.mark.asyncio
async def test_each_requirement_sees_its_chunks_in_order_one_at_a_time() -> None:
    active = {"n": 0, "max": 0}

    class Stateful(Requirement):
        def __init__(self) -> None:
            super().__init__("stateful")
            self.order: list[str] = []

        async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
            active["n"] += 1
            active["max"] = max(active["max"], active["n"])
            await asyncio.sleep(0.005)
            self.order.append(chunk)
            active["n"] -= 1
            return PASS

    stateful = Stateful()
    result, events, _ = await run([stateful])
    assert active["max"] == 1
    assert result.completed
    # The run copies requirements; the copy's order is in the QuickCheckEvents' requirements.
    (copy,) = next(e for e in events if isinstance(e, QuickCheckEvent)).requirements
    assert copy.order == [s.strip() for s in SENTENCES]  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_a_stateless_check_with_concurrency_checks_several_chunks_at_once() -> None:
    active = {"n": 0, "max": 0}

    class Judge(Requirement):
        async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
            active["n"] += 1
            active["max"] = max(active["max"], active["n"])
            await asyncio.sleep(0.02)
            active["n"] -= 1
            return PASS

    many = [f"Sentence {i} is here. " for i in range(12)]
    result, events, _ = await run([Judge("judge", concurrency=4)], deltas=deltas_of(many, 40))
    assert active["max"] == 4
    assert result.completed
    assert [e.chunk_index for e in events if isinstance(e, ChunkEvent)] == list(range(12))


# -- eager start ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_checks_that_answer_at_once_run_without_a_task_per_chunk() -> None:
    loop = asyncio.get_running_loop()
    created: list[Any] = []
    default_factory = loop.get_task_factory()

    def counting_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        created.append(getattr(coro, "__qualname__", coro))
        if default_factory is not None:
            return default_factory(loop, coro, **kwargs)  # type: ignore[arg-type]
        return asyncio.Task(coro, loop=loop, **kwargs)

    counts = []
    for n in (4, 40):
        created.clear()
        many = [f"Sentence {i} is here. " for i in range(n)]
        loop.set_task_factory(counting_factory)
        try:
            result, events, _ = await run([Check("a"), Check("b"), Check("c")], deltas=deltas_of(many))
        finally:
            loop.set_task_factory(default_factory)
        assert result.completed and sum(isinstance(e, ChunkEvent) for e in events) == n
        counts.append(len(created))
    # The producer, one lane shared by the three checks (none suspends, so one lane is
    # always free), the final validation and its three validate() calls: not one task per
    # requirement per chunk, nor one per requirement.
    assert counts == [6, 6], created
    assert created.count("Lane._drive") == 1


@pytest.mark.asyncio
async def test_a_check_started_eagerly_gets_its_own_task_for_timeouts_and_task_groups() -> None:
    seen: dict[str, Any] = {}

    class UsesTaskMachinery(Requirement):
        async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
            seen.setdefault("tasks", set()).add(asyncio.current_task())
            try:
                async with asyncio.timeout(0.01):  # bound to the check's own task
                    await asyncio.sleep(10)
            except TimeoutError:
                seen["timeouts"] = seen.get("timeouts", 0) + 1
            async with asyncio.TaskGroup() as group:
                sub = group.create_task(asyncio.sleep(0, result="sub-check"))
            seen["sub"] = sub.result()
            return PASS

    backend = ScriptedBackend(deltas_of(SENTENCES[:2]), delay=0.001)
    result = await stream_with_chunking(
        CBlock("q"), backend, SimpleContext(), requirements=[UsesTaskMachinery("t")]
    )
    await result.acomplete()
    assert result.completed and result.full_text == "".join(SENTENCES[:2])
    assert seen["timeouts"] == 2 and seen["sub"] == "sub-check"
    # The producer's task was never the check's task: its timeout never hit the generation.
    assert backend.generations[0].cancelled_at is None
    assert len(seen["tasks"]) == 1


# -- deadlines and error policies ----------------------------------------------------


@pytest.mark.asyncio
async def test_a_check_past_its_deadline_fails_closed_by_default() -> None:
    judge = Check("judge", delay=5, timeout=0.02)
    result, events, backend = await run([judge], delay=0.01)
    assert kinds(events) == ["Q0!", "CompletedEvent"]
    assert results_of(events, 0) == [("fail", "timed out after 0.02 s")]
    assert judge.cancelled and not result.completed
    assert backend.generations[0].cancelled_at is not None


@pytest.mark.asyncio
async def test_a_check_past_its_deadline_may_fail_open() -> None:
    judge = Check("judge", delay=5, timeout=0.01, on_timeout="unknown")
    result, events, _ = await run([judge], deltas=deltas_of(SENTENCES[:2]))
    assert result.completed
    assert results_of(events, 0) == [("unknown", "timed out after 0.01 s")]
    assert results_of(events, 1) == [("unknown", "timed out after 0.01 s")]


@pytest.mark.asyncio
async def test_the_run_level_deadline_applies_to_checks_without_their_own() -> None:
    own = Check("own", delay=0.05, timeout=1)
    default = Check("default", delay=5)
    _, events, _ = await run([own, default], deltas=deltas_of(SENTENCES[:1]), validation_timeout=0.02)
    assert results_of(events, 0)[1] == ("fail", "timed out after 0.02 s")
    assert own.finished == [SENTENCES[0].strip()] or results_of(events, 0)[0][1] == "cancelled"


@pytest.mark.asyncio
async def test_a_final_validate_past_its_deadline_counts_as_its_policy() -> None:
    class SlowFinal(Requirement):
        async def validate(self, backend: Any, ctx: Any, **kwargs: Any) -> ValidationResult:
            await asyncio.sleep(5)
            return ValidationResult(True)

    _, events, _ = await run(
        [SlowFinal("closed", timeout=0.01), SlowFinal("open", timeout=0.01, on_timeout="unknown")],
        deltas=deltas_of(SENTENCES[:1]),
    )
    (final,) = [e for e in events if isinstance(e, FullValidationEvent)]
    assert [(r.result, r.reason) for r in final.results] == [
        (False, "timed out after 0.01 s"),
        (True, "timed out after 0.01 s (on_timeout='unknown': not counted as a failure)"),
    ]
    assert not final.passed


@pytest.mark.asyncio
async def test_a_check_that_raises_may_fail_open() -> None:
    flaky = Check("flaky", raises_on=1, on_error="unknown")
    result, events, _ = await run([flaky], deltas=deltas_of(SENTENCES[:2]))
    assert result.completed
    assert results_of(events, 0) == [("unknown", "check raised ZeroDivisionError: flaky broke on chunk 1")]
    assert results_of(events, 1) == [("pass", "flaky says pass")]


def test_bad_scheduling_options_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="concurrency must be a whole number >= 1; got 0"):
        Requirement("x", concurrency=0)
    with pytest.raises(ValueError, match="timeout must be a number of seconds > 0"):
        Requirement("x", timeout=0)
    with pytest.raises(ValueError, match="on_timeout must be one of 'fail', 'unknown'; got 'pass'"):
        Requirement("x", on_timeout="pass")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_error must be one of 'raise', 'unknown'; got 'ignore'"):
        Requirement("x", on_error="ignore")  # type: ignore[arg-type]


# -- a requirement's own chunking (Mellea 0.8) ----------------------------------------------


class NoWord(Requirement):
    """Mellea 0.8 style: overrides ``_stream_validate``, fed this requirement's own chunks."""

    def __init__(self, word: str, **kwargs: Any) -> None:
        super().__init__(f"no {word!r}", **kwargs)
        self.word = word
        self.pieces: list[str] = []

    async def _stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        self.pieces.append(chunk)
        return PartialValidationResult("fail" if self.word in chunk.lower() else "pass")


@pytest.mark.asyncio
async def test_a_word_level_check_beside_a_sentence_stream_checks_words_and_stops_on_one() -> None:
    words = NoWord("three", chunking="word")
    sentences = Check("sentences")
    result, events, backend = await run([words, sentences], delay=0.001)
    # It fails at the word, before the stream has cut the sentence around it: the failing
    # verdict is on the text after the last chunk, which is never delivered.
    assert kinds(events) == ["Q0", "C0", "Q1", "C1", "Q2!", "CompletedEvent"]
    assert results_of(events, 2)[0][0] == "fail"
    # The stream's chunks stay sentences; the word check saw words (its copy's record).
    q = next(e for e in events if isinstance(e, QuickCheckEvent))
    assert q.requirements[0].pieces[:4] == ["One", "is", "here.", "Two"]  # type: ignore[attr-defined]
    assert backend.generations[0].cancelled_at is not None
    assert result.full_text == "".join(SENTENCES[:2]).strip()


@pytest.mark.asyncio
async def test_a_coarser_own_chunking_holds_delivery_until_its_piece_is_judged() -> None:
    paragraphs = NoWord("five", chunking="paragraph")  # the whole text is one paragraph
    result, events, _ = await run([paragraphs])
    # The paragraph covers every sentence: none leaves before it is judged, at the natural
    # end; it fails, which fails the first sentence it covers. Nothing unjudged was delivered.
    assert kinds(events) == ["Q0!", "CompletedEvent"]
    assert results_of(events, 0) == [("fail", None)]
    assert not result.completed and result.full_text == ""


@pytest.mark.asyncio
async def test_an_own_chunking_check_that_passes_its_piece_releases_the_held_chunks() -> None:
    paragraphs = NoWord("seven", chunking="paragraph")
    result, events, _ = await run([paragraphs, Check("plain")])
    assert kinds(events) == [
        *(f"{kind}{i}" for i in range(5) for kind in "QC"),
        "StreamingDoneEvent",
        "FullValidationEvent",
        "CompletedEvent",
    ]
    assert results_of(events, 4) == [("pass", None), ("pass", "plain says pass")]
    assert result.completed and result.full_text == "".join(SENTENCES)


def test_an_unknown_own_chunking_alias_is_a_clear_error_at_assembly() -> None:
    with pytest.raises(ValueError, match="sentence"):
        validate([Requirement("x", chunking="sentences")], backend=None, ctx=SimpleContext())


# -- the operator alone: snapshots for a retry ----------------------------------------


class Counter(Requirement):
    def __init__(self, fail_at: int) -> None:
        super().__init__("counter")
        self.count = 0
        self.fail_at = fail_at

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        self.count += 1
        return PartialValidationResult("fail" if self.count == self.fail_at else "pass")


@pytest.mark.asyncio
async def test_a_failing_verdict_with_snapshots_restores_each_requirement_to_before_the_failing_chunk() -> (
    None
):
    counter = Counter(fail_at=3)
    subject: Subject[Chunk] = Subject()
    got: list[ChunkVerdict] = []
    done = asyncio.Event()
    subject.pipe(validate([counter], backend=None, ctx=SimpleContext(), snapshots=True)).subscribe(
        got.append, on_completed=done.set
    )
    for i, text in enumerate(["a", "b", "c", "d"]):
        subject.on_next(Chunk(text, i, i, i + 1))
    await asyncio.wait_for(done.wait(), 5)
    assert [v.passed for v in got] == [True, True, False]
    assert got[0].restore is None and got[2].restore is not None
    (restored,) = got[2].restore
    assert restored.count == 2 and counter.count == 3  # type: ignore[attr-defined]


# -- finished runs are freed by reference counting -------------------------------------


@pytest.mark.asyncio
async def test_a_finished_run_is_freed_without_the_cycle_collector() -> None:
    async def one(fail: bool) -> tuple[weakref.ref[Any], weakref.ref[Any]]:
        result, _, _ = await run([Check("a", {2: "fail"} if fail else {}), Check("b", delay=0)])
        await result.acomplete()
        return weakref.ref(result), weakref.ref(result.mot)

    gc.collect()
    gc.disable()
    try:
        for fail in (False, True):
            refs = await one(fail)
            for _ in range(3):  # the producer's task and the lanes finish on the next turns
                await asyncio.sleep(0)
            assert [r() is None for r in refs] == [True, True], f"fail={fail}"
    finally:
        gc.enable()


# -- lanes and the loop's shutdown -------------------------------------------------------

SHUTDOWN_SCRIPT = """
import asyncio
from backends import ScriptedBackend
from engine import CBlock, PartialValidationResult, Requirement, SimpleContext, stream_with_chunking

class Waits(Requirement):
    async def stream_validate(self, chunk, *, backend, ctx):
        await asyncio.sleep(60)  # a judge still waiting when the program ends
        return PartialValidationResult("pass")

class Quick(Requirement):
    async def stream_validate(self, chunk, *, backend, ctx):
        return PartialValidationResult("unknown")

async def main():
    backend = ScriptedBackend(["One sentence here. "] * 100, delay=0.01)
    result = await stream_with_chunking(
        CBlock("x"), backend, SimpleContext(), requirements=[Quick("q"), Waits("w")]
    )
    await asyncio.sleep(0.1)  # leave the run (and its lanes) behind, unfinished

asyncio.run(main())
print("returned")
"""


def test_asyncio_run_returns_when_a_run_with_waiting_checks_is_left_behind() -> None:
    # asyncio.run cancels every task left at shutdown; a lane must end on that cancel,
    # not take it for the cancel of one of its checks.
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run(
        [sys.executable, "-c", SHUTDOWN_SCRIPT],
        cwd=Path(__file__).resolve().parent.parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "returned"


@pytest.mark.asyncio
async def test_a_lane_cancelled_from_outside_ends_and_reports_its_check_cancelled() -> None:
    from engine.core.eager import PENDING, Lane

    outcomes: list[Any] = []
    lane = Lane(asyncio.get_running_loop(), lambda _lane, result, error: outcomes.append((result, error)))

    async def check() -> str:
        await asyncio.sleep(10)
        return "never"

    assert lane.start(check()) is PENDING
    await asyncio.sleep(0)
    task = lane._task
    assert task is not None
    task.cancel()  # not lane.cancel(): someone else's cancellation
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(outcomes) == 1 and isinstance(outcomes[0][1], asyncio.CancelledError)


@pytest.mark.asyncio
async def test_a_lane_cancelled_from_outside_is_closed_before_its_owner_hears_and_never_reused() -> None:
    from engine.core.eager import PENDING, Lane

    seen: list[bool] = []
    lane = Lane(asyncio.get_running_loop(), lambda lane, _result, _error: seen.append(lane.closed))

    async def check() -> str:
        await asyncio.sleep(10)
        return "never"

    assert lane.start(check()) is PENDING
    await asyncio.sleep(0)
    assert lane._task is not None
    lane._task.cancel()  # someone else's cancellation (asyncio.run shutting down)
    await asyncio.sleep(0)
    assert seen == [True] and lane.closed


@pytest.mark.asyncio
async def test_a_run_whose_idle_lane_was_cancelled_from_outside_checks_on_with_a_new_lane() -> None:
    a, b = Check("a"), Check("b", delay=0)

    async def cancel_idle_lanes() -> None:
        # After the first chunks, cancel every lane task that waits for work.
        while len(a.seen) < 2:
            await asyncio.sleep(0)
        for task in asyncio.all_tasks():
            if (
                getattr(task.get_coro(), "__qualname__", "") == "Lane._drive"
                and task is not asyncio.current_task()
            ):
                task.cancel()

    killer = asyncio.ensure_future(cancel_idle_lanes())
    # A job handed to a lane whose task is then cancelled is reported cancelled, not lost
    # (a lost one would hang the run: the bound makes that a failure).
    result, events, _ = await asyncio.wait_for(run([a, b], delay=0.001), 10)
    await asyncio.wait_for(killer, 10)
    assert result.completed, kinds(events)
    assert sum(isinstance(e, ChunkEvent) for e in events) == len(SENTENCES)


class _Closer:
    """An async iterator that is not a generator; its aclose() returns *closing()*'s awaitable."""

    def __init__(self, closing: Any) -> None:
        self.items = iter(deltas_of(SENTENCES))
        self.closing = closing
        self.closed = 0

    def __aiter__(self) -> _Closer:
        return self

    async def __anext__(self) -> str:
        await asyncio.sleep(0)
        try:
            return next(self.items)
        except StopIteration:
            raise StopAsyncIteration from None

    def aclose(self) -> Any:
        self.closed += 1
        return self.closing()


def _broken_close() -> Any:
    raise OSError("the cleanup broke")


def _future_close() -> Any:
    future = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.01, future.set_result, None)
    return future


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "closing", [_broken_close, _future_close], ids=["aclose raises", "aclose returns a future"]
)
async def test_a_failing_verdict_closes_any_async_iterator_once_and_the_run_ends(closing: Any) -> None:
    from engine.core.asyncrx import from_async_iterable
    from engine.core.thunk import ModelOutputThunk

    source = _Closer(closing)

    class Backend:
        async def generate_from_context(self, action: Any, ctx: Any, **kwargs: Any) -> Any:
            thunk: ModelOutputThunk[str] = ModelOutputThunk(from_async_iterable(lambda: source))
            return thunk, ctx.add(action).add(thunk)

    result = await asyncio.wait_for(
        stream_with_chunking(CBlock("q"), Backend(), SimpleContext(), requirements=[Check("f", {2: "fail"})]),
        5,
    )
    events = await asyncio.wait_for(_all(result.events()), 5)
    assert kinds(events) == ["Q0", "C0", "Q1!", "CompletedEvent"]
    await asyncio.wait_for(result.mot.avalue(), 5)
    await asyncio.sleep(0.02)
    assert source.closed == 1


async def _all(events: Any) -> list[StreamEvent]:
    return [e async for e in events]


@pytest.mark.asyncio
async def test_a_check_raising_on_the_chunk_another_failed_ends_the_run_with_its_error() -> None:
    # A failure does not hide an error on the same chunk: the run ends as the error alone would.
    fails = Check("fails", {2: "fail"})
    raises = Check("raises", raises_on=2)
    result, events, _ = await run([fails, raises], delay=0.001)
    assert kinds(events)[:2] == ["Q0", "C0"]
    (error,) = [e for e in events if isinstance(e, ErrorEvent)]
    assert error.exception_type == "ZeroDivisionError" and "broke on chunk 2" in error.detail
    assert result.completed is False


@pytest.mark.asyncio
async def test_a_check_still_waiting_when_a_sibling_fails_its_chunk_is_cancelled_before_it_can_raise() -> (
    None
):
    fails = Check("fails", {2: "fail"})
    raises = Check("raises", raises_on=2, delay=0)
    result, events, _ = await run([fails, raises], delay=0.001)
    assert result.completed is False
    assert kinds(events) == ["Q0", "C0", "Q1!", "CompletedEvent"]
    assert results_of(events, 1) == [("fail", "fails says fail"), ("unknown", "cancelled")]
    assert raises.cancelled == [SENTENCES[1].strip()] and not any(isinstance(e, ErrorEvent) for e in events)


class _RaisesWhenCancelled(Requirement):
    """Waits on its second chunk; when cancelled, raises an ordinary exception on its way out."""

    def __init__(self) -> None:
        super().__init__("raises when cancelled")
        self.seen = 0

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        self.seen += 1
        if self.seen < 2:
            return PASS
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup broke while cancelled") from None
        return PASS


@pytest.mark.asyncio
async def test_a_cancelled_check_raising_on_its_way_out_still_lets_the_run_end() -> None:
    # Its error is the last answer the ending verdict waits for: the run must end with it, not hang.
    fails = Check("fails", {2: "fail"})
    result, events, _ = await asyncio.wait_for(run([fails, _RaisesWhenCancelled()], delay=0.001), 10)
    (error,) = [e for e in events if isinstance(e, ErrorEvent)]
    assert error.exception_type == "RuntimeError" and "cleanup broke" in error.detail
    assert result.completed is False


class _SharedFailure(Requirement):
    """Raises one shared exception object on its second chunk (a shared failed future, say)."""

    def __init__(self, name: str, error: Exception) -> None:
        super().__init__(name)
        self.error = error
        self.seen = 0

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        self.seen += 1
        if self.seen == 2:
            await asyncio.sleep(0)  # both have started the chunk before either raises
            raise self.error
        return PASS


@pytest.mark.asyncio
async def test_one_exception_raised_by_two_checks_is_one_error_without_notes() -> None:
    shared = ValueError("the shared service is down")
    _, events, _ = await run([_SharedFailure("a", shared), _SharedFailure("b", shared)], delay=0.001)
    (error,) = [e for e in events if isinstance(e, ErrorEvent)]
    assert error.exception_type == "ValueError"
    assert getattr(shared, "__notes__", []) == []
