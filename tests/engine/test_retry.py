"""In-stream retry: the operators it is built from, and runs over the scripted backend."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import Any

import pytest
import reactivex
from reactivex import Observable
from reactivex.subject import Subject

from backends import ScriptedBackend
from engine import (
    ChunkEvent,
    CompletedEvent,
    Continuation,
    ErrorEvent,
    FullValidationEvent,
    Instruction,
    MaxSentences,
    MaxWords,
    PartialValidationResult,
    QuickCheckEvent,
    Requirement,
    RetryEvent,
    SimpleContext,
    StreamEvent,
    StreamingDoneEvent,
    StreamRetry,
    ValidationResult,
    stream_with_chunking,
)
from engine.core.backend import Backend
from engine.core.context import Context
from operators import (
    Chunk,
    ChunkVerdict,
    Retrying,
    RetryRequest,
    cancel_on_fail,
    chunk,
    retry_on_fail,
    validate,
)
from operators.verdicts import VerdictItem
from tests.doubles import NoShouting

# -- requirements used below -------------------------------------------------------


class ChunkCounter(Requirement):
    """Counts the chunks it was shown (immutable state, reassigned) and what validate() saw."""

    def __init__(self) -> None:
        super().__init__("counts chunks")
        self.seen: tuple[str, ...] = ()
        self.final_text: str | None = None

    async def stream_validate(self, chunk: str, *, backend: Backend, ctx: Context) -> PartialValidationResult:
        self.seen = (*self.seen, chunk)
        return PartialValidationResult("unknown", reason=f"{len(self.seen)} chunks")

    async def validate(self, backend: Backend, ctx: Context, **_: Any) -> ValidationResult:
        output = ctx.last_output()
        assert output is not None
        self.final_text = await output.avalue()
        return ValidationResult(True)


class FailOn(Requirement):
    """Fails every chunk for which *predicate* holds; *retryable* as given."""

    def __init__(self, predicate: Callable[[str], bool], *, retryable: bool = True) -> None:
        super().__init__("no bad chunk")
        self.predicate = predicate
        self.retryable = retryable

    async def stream_validate(self, chunk: str, *, backend: Backend, ctx: Context) -> PartialValidationResult:
        if self.predicate(chunk):
            return PartialValidationResult("fail", reason="bad", retryable=self.retryable)
        return PartialValidationResult("pass")

    async def validate(self, backend: Backend, ctx: Context, **_: Any) -> ValidationResult:
        return ValidationResult(True)


async def collect(events: Observable[Any]) -> list[Any]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    items: list[Any] = []
    events.subscribe(items.append, lambda e: done.set_exception(e), lambda: done.set_result(None))
    await asyncio.wait_for(done, 5)
    return items


def shape(events: list[StreamEvent]) -> list[tuple[Any, ...]]:
    """Each event as (name, attempt, chunk index or text), enough to pin the order."""
    out: list[tuple[Any, ...]] = []
    for event in events:
        match event:
            case QuickCheckEvent(chunk_index=i, passed=passed, attempt=a):
                out.append(("check", a, i, passed))
            case ChunkEvent(text=text, chunk_index=i, attempt=a):
                out.append(("chunk", a, i, text))
            case RetryEvent(attempt=a):
                out.append(("retry", a))
            case StreamingDoneEvent(attempt=a):
                out.append(("done", a))
            case FullValidationEvent(attempt=a):
                out.append(("final", a))
            case CompletedEvent(success=success, attempts_used=used):
                out.append(("completed", success, used))
            case ErrorEvent(exception_type=name):
                out.append(("error", name))
    return out


# -- operators ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_validate_with_snapshots_restores_the_state_before_the_failing_chunk() -> None:
    counter, failing = ChunkCounter(), FailOn(lambda c: c == "c")
    chunks = [Chunk(t, i, 2 * i, 2 * i + 1) for i, t in enumerate("abcd")]
    source = reactivex.from_iterable(chunks)
    verdicts = await collect(
        source.pipe(validate([counter, failing], backend=None, ctx=SimpleContext(), snapshots=True))
    )
    assert [v.passed for v in verdicts] == [True, True, False]
    assert [v.restore for v in verdicts[:2]] == [None, None]
    restore = verdicts[2].restore
    assert restore is not None and len(restore) == 2
    # The counter's snapshot is the state right after "b": "c" is not in it; the live one saw "c".
    assert restore[0] is not counter and restore[0].seen == ("a", "b")
    assert counter.seen == ("a", "b", "c")
    # Without snapshots, no copies are taken and a failing verdict carries none.
    plain = await collect(
        reactivex.from_iterable(chunks).pipe(
            validate([FailOn(lambda c: c == "a")], backend=None, ctx=SimpleContext())
        )
    )
    assert plain[0].restore is None


@pytest.mark.asyncio
async def test_chunk_continues_indices_and_offsets_from_a_start() -> None:
    chunks = await collect(
        reactivex.from_iterable([" Three. Fo", "ur."]).pipe(chunk("sentence", start_index=2, start_offset=9))
    )
    assert [(c.text, c.chunk_index, c.start, c.end) for c in chunks] == [
        ("Three.", 2, 10, 16),
        ("Four.", 3, 17, 22),
    ]


def _verdict(
    index: int, text: str, *, fail: bool = False, retryable: bool = True, end: int | None = None
) -> ChunkVerdict:
    req = FailOn(lambda _: fail)
    result = (
        PartialValidationResult("fail", reason="bad", retryable=retryable)
        if fail
        else PartialValidationResult("pass")
    )
    start = 10 * index
    return ChunkVerdict(
        Chunk(text, index, start, end if end is not None else start + len(text)), (result,), (req,)
    )


@pytest.mark.asyncio
async def test_retry_on_fail_switches_to_the_next_attempt_and_stops_the_failing_one() -> None:
    first: Subject[ChunkVerdict] = Subject()
    second: Subject[ChunkVerdict] = Subject()
    requests: list[RetryRequest] = []

    def start_attempt(request: RetryRequest) -> Observable[ChunkVerdict]:
        requests.append(request)
        return second

    out: list[VerdictItem] = []
    done: list[str] = []
    first.pipe(retry_on_fail(start_attempt, max_attempts=3)).subscribe(
        out.append, on_completed=lambda: done.append("end")
    )
    first.on_next(_verdict(0, "One."))
    first.on_next(_verdict(1, "Two."))
    bad = _verdict(2, "BAD.", fail=True)
    first.on_next(bad)
    assert not first.observers, "the failing attempt is disposed at once"
    assert requests == [RetryRequest(2, bad, "no bad chunk: bad", delivered_end=14, next_index=2)]
    assert out[-1] == Retrying(bad, 2, "no bad chunk: bad")
    first.on_next(_verdict(3, "stale"))  # a disposed attempt never speaks again
    good = _verdict(2, "Three.")
    second.on_next(good)
    second.on_completed()
    assert out == [out[0], out[1], Retrying(bad, 2, "no bad chunk: bad"), good]
    assert done == ["end"]


@pytest.mark.asyncio
async def test_retry_on_fail_passes_a_failure_it_cannot_retry() -> None:
    started: list[RetryRequest] = []

    def start_attempt(request: RetryRequest) -> Observable[ChunkVerdict]:
        started.append(request)
        return reactivex.from_iterable([_verdict(1, "AGAIN.", fail=True)])

    # Attempts exhausted: the second failure passes through for cancel_on_fail.
    items = await collect(
        reactivex.from_iterable([_verdict(0, "BAD.", fail=True)]).pipe(
            retry_on_fail(start_attempt, max_attempts=2), cancel_on_fail()
        )
    )
    assert [type(i).__name__ for i in items] == ["Retrying", "ChunkVerdict"]
    assert isinstance(items[1], ChunkVerdict) and not items[1].passed and len(started) == 1
    # Not retryable: passed through at once, no attempt started.
    started.clear()
    items = await collect(
        reactivex.from_iterable([_verdict(0, "BAD.", fail=True, retryable=False)]).pipe(
            retry_on_fail(start_attempt, max_attempts=3), cancel_on_fail()
        )
    )
    assert [type(i).__name__ for i in items] == ["ChunkVerdict"] and started == []
    with pytest.raises(ValueError, match="max_attempts"):
        retry_on_fail(start_attempt, max_attempts=0)


# -- runs over the scripted backend ------------------------------------------------


@pytest.mark.asyncio
async def test_a_retry_continues_the_delivered_text_and_takes_nothing_back() -> None:
    backend = ScriptedBackend(
        ["One. ", "Two. ", "THREE. ", "Four."], continuations=[[" Three,", " calmly.", " Four."]], delay=0.01
    )
    counter = ChunkCounter()
    result = await stream_with_chunking(
        Instruction("Count to four."),
        backend,
        SimpleContext(),
        requirements=[NoShouting(), counter],
        retry=StreamRetry(max_attempts=3),
    )
    chunks = [c async for c in result.astream()]
    events = [e async for e in result.events()]
    await result.acomplete()

    assert shape(events) == [
        ("check", 1, 0, True),
        ("chunk", 1, 0, "One."),
        ("check", 1, 1, True),
        ("chunk", 1, 1, "Two."),
        ("check", 1, 2, False),
        ("retry", 2),
        ("check", 2, 2, True),
        ("chunk", 2, 2, "Three, calmly."),
        ("check", 2, 3, True),
        ("chunk", 2, 3, "Four."),
        ("done", 2),
        ("final", 2),
        ("completed", True, 2),
    ]
    retry_event = next(e for e in events if isinstance(e, RetryEvent))
    assert retry_event.reason == "Do not shout: 'THREE.' is in capitals"
    assert chunks == ["One.", "Two.", "Three, calmly.", "Four."]
    assert result.full_text == "One. Two. Three, calmly. Four." == result.as_thunk().value
    assert result.completed and result.attempts_used == 2
    # The final validation judged the whole delivered text; result.ctx ends with it.
    run_counter = events[0].requirements[1]  # type: ignore[attr-defined]
    assert isinstance(run_counter, ChunkCounter) and run_counter.final_text == result.full_text
    # The first generation was cancelled at the failing chunk; the second ran to its end.
    first, second = backend.generations
    assert first.cancelled and not second.cancelled
    assert second.extra["attempt"] == 2 and second.extra["continuation_prefix"] == "One. Two."
    assert "'THREE.'" in second.extra["repair"] and "in capitals" in second.extra["repair"]
    assert result.mots[0].text == "One. Two. THREE. " and result.mot is result.mots[1]
    last = result.ctx.last_output()
    assert last is not None and last.value == result.full_text
    assert result.ctx.as_list()[0] == Instruction("Count to four.")
    # The repaired failure is not what ended the run: it is a retried one.
    assert result.streaming_failures == []
    assert [f[1].reason for f in result.retried_failures] == ["'THREE.' is in capitals"]


@pytest.mark.asyncio
async def test_requirements_keep_counting_across_attempts_without_the_failing_chunk() -> None:
    backend = ScriptedBackend(["one two. ", "THREE FOUR. "], continuations=[[" three four. ", "five."]])
    counter, words = ChunkCounter(), MaxWords(5)
    # The counters come first, so they count the failing chunk before NoShouting fails it.
    result = await stream_with_chunking(
        "count", backend, SimpleContext(), requirements=[counter, words, NoShouting()], retry=StreamRetry()
    )
    events = [e async for e in result.events()]
    await result.acomplete()
    checks = [e for e in events if isinstance(e, QuickCheckEvent)]
    assert [c.results[1].reason for c in checks] == [
        "2 of at most 5 words",
        "4 of at most 5 words",  # "THREE FOUR." counted, then failed by NoShouting...
        "4 of at most 5 words",  # ...and not counted any more: the count went back to 2
        "5 of at most 5 words",
    ]
    run_counter = checks[0].requirements[0]
    assert isinstance(run_counter, ChunkCounter)
    # As if one generation had written "one two. three four. five.": the rejected chunk is not counted.
    assert run_counter.seen == ("one two.", "three four.", "five.")
    assert run_counter.final_text == "one two. three four. five."
    assert result.completed and result.attempts_used == 2
    assert counter.seen == ()  # the caller's requirement was copied, untouched


@pytest.mark.asyncio
async def test_a_failure_no_retry_can_fix_ends_the_run_at_once() -> None:
    backend = ScriptedBackend(["One. ", "Two. ", "Three. ", "Four."], continuations=[[" never."]], delay=0.01)
    result = await stream_with_chunking(
        "x", backend, SimpleContext(), requirements=[MaxSentences(2)], retry=StreamRetry(max_attempts=3)
    )
    events = [e async for e in result.events()]
    await result.acomplete()
    assert shape(events)[-2:] == [("check", 1, 2, False), ("completed", False, 1)]
    assert not any(isinstance(e, RetryEvent) for e in events)
    assert len(backend.generations) == 1 and backend.generations[0].cancelled
    assert result.full_text == "One. Two." and result.attempts_used == 1
    assert result.streaming_failures[0][1].retryable is False


@pytest.mark.asyncio
async def test_when_attempts_run_out_the_last_failure_ends_the_run() -> None:
    backend = ScriptedBackend(
        ["Fine. ", "LOUD. ", "more."], continuations=[[" Ok. ", "LOUDER. ", "more."]], delay=0.01
    )
    result = await stream_with_chunking(
        "x", backend, SimpleContext(), requirements=[NoShouting()], retry=StreamRetry(max_attempts=2)
    )
    events = [e async for e in result.events()]
    await result.acomplete()
    assert shape(events) == [
        ("check", 1, 0, True),
        ("chunk", 1, 0, "Fine."),
        ("check", 1, 1, False),
        ("retry", 2),
        ("check", 2, 1, True),
        ("chunk", 2, 1, "Ok."),
        ("check", 2, 2, False),
        ("completed", False, 2),
    ]
    assert result.full_text == "Fine. Ok." == result.as_thunk().value and not result.completed
    assert [g.cancelled for g in backend.generations] == [True, True]


@pytest.mark.asyncio
async def test_each_attempt_gets_its_own_script_and_a_failing_first_chunk_continues_from_nothing() -> None:
    backend = ScriptedBackend(["NO. "], continuations=[["STILL NO. "], ["Yes."]])
    result = await stream_with_chunking(
        "x", backend, SimpleContext(), requirements=[NoShouting()], retry=StreamRetry(max_attempts=3)
    )
    events = [e async for e in result.events()]
    assert shape(events) == [
        ("check", 1, 0, False),
        ("retry", 2),
        ("check", 2, 0, False),
        ("retry", 3),
        ("check", 3, 0, True),
        ("chunk", 3, 0, "Yes."),
        ("done", 3),
        ("final", 3),
        ("completed", True, 3),
    ]
    assert [g.extra.get("continuation_prefix") for g in backend.generations] == [None, "", ""]
    assert result.full_text == "Yes."


@pytest.mark.asyncio
async def test_an_error_in_a_later_attempt_ends_the_run_with_it() -> None:
    class Flaky(ScriptedBackend):
        async def generate_from_context(self, action: Any, ctx: Context, **kw: Any) -> Any:
            if isinstance(action, Continuation):
                raise ConnectionError("server went away")
            return await super().generate_from_context(action, ctx, **kw)

    backend = Flaky(["Fine. ", "LOUD. "])
    result = await stream_with_chunking(
        "x", backend, SimpleContext(), requirements=[NoShouting()], retry=StreamRetry()
    )
    events = [e async for e in result.events()]
    with pytest.raises(ConnectionError):
        await result.acomplete()
    assert shape(events)[-4:] == [
        ("check", 1, 1, False),
        ("retry", 2),
        ("error", "ConnectionError"),
        ("completed", False, 2),
    ]
    assert result.full_text == "Fine."


@pytest.mark.asyncio
async def test_retry_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        StreamRetry(max_attempts=0)
    with pytest.raises(ValueError, match=r"\{reason\} and \{rejected\}"):
        StreamRetry(repair="fix {what}")
    assert StreamRetry(repair="{reason} / {rejected}").repair_instruction("r", "c") == "r / c"
    with pytest.raises(TypeError, match="StreamRetry"):
        await stream_with_chunking("x", ScriptedBackend(["a"]), SimpleContext(), retry=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="one list of delta strings per retry"):
        ScriptedBackend(["a"], continuations=["b"])


@pytest.mark.asyncio
async def test_one_attempt_is_the_plain_early_exit() -> None:
    backend = ScriptedBackend(["Fine. ", "LOUD. ", "more."])
    result = await stream_with_chunking(
        "x", backend, SimpleContext(), requirements=[NoShouting()], retry=StreamRetry(max_attempts=1)
    )
    events = [e async for e in result.events()]
    assert shape(events)[-2:] == [("check", 1, 1, False), ("completed", False, 1)]
    assert len(backend.generations) == 1


def test_a_continuation_renders_for_backends_that_do_not_know_it() -> None:
    turn = Continuation(Instruction("Count."), "One. Two.", repair="Do not shout.", attempt=2)
    assert turn.format_for_llm() == (
        "Count.\n\nDo not shout.\n\nYour answer so far (write only what comes next, without repeating it):\nOne. Two."
    )


@pytest.mark.asyncio
async def test_cancelling_the_run_during_a_retry_cancels_the_new_generation() -> None:
    backend = ScriptedBackend(
        ["Fine. ", "LOUD. ", "x"], continuations=[[" Calm."] + [" on"] * 100], delay=0.01
    )
    result = await stream_with_chunking(
        "x", backend, SimpleContext(), requirements=[NoShouting()], retry=StreamRetry()
    )
    second_attempt_chunk: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def watch(event: StreamEvent) -> None:
        if isinstance(event, ChunkEvent) and event.attempt == 2 and not second_attempt_chunk.done():
            second_attempt_chunk.set_result(None)

    result.observable.subscribe(watch)
    await asyncio.wait_for(second_attempt_chunk, 5)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(result.acomplete(), 0.02)
    await asyncio.sleep(0)
    first, second = backend.generations
    assert first.cancelled and second.cancelled and second.cancelled_at is not None
    assert result.full_text.startswith("Fine. Calm.") and not result.completed
    assert len(result.mots) == 2


def test_restoring_a_snapshot_covers_dict_and_slots_state() -> None:
    from engine.attempts import restore_states

    class Slotted(Requirement):
        __slots__ = ("count",)

        def __init__(self) -> None:
            super().__init__("slotted")
            self.count = 0

    live = Slotted()
    live.count = 1
    snapshot = copy.copy(live)
    live.count, live.description, live.extra = 5, "changed", "added"  # type: ignore[attr-defined]
    restore_states([live], [snapshot])
    assert (live.count, live.description, hasattr(live, "extra")) == (1, "slotted", False)
    restore_states([live], None)  # no snapshots: nothing to do
    assert live.count == 1


def test_the_retry_reason_names_each_failing_requirement_and_its_reason_once() -> None:
    from operators import Chunk, ChunkVerdict
    from operators.retry_on_fail import failure_reason

    worded = Requirement("The response must not use these words: Celsius.")
    shouting = Requirement("Do not shout")
    quiet = Requirement("Be brief.")
    verdict = ChunkVerdict(
        Chunk("It is 20 Celsius.", 4, 0, 17),
        (
            PartialValidationResult("fail", reason="forbidden word 'Celsius'"),
            PartialValidationResult("fail"),
            PartialValidationResult("pass", reason="fine"),
        ),
        (worded, shouting, quiet),
    )
    assert failure_reason(verdict) == (
        "The response must not use these words: Celsius: forbidden word 'Celsius'; Do not shout"
    )
