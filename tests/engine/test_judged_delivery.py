"""Delivery is judged text only, with requirements that cut the output themselves.

A requirement with its own chunking (a word check beside a sentence stream) judges every
piece of a chunk before the chunk is delivered; its state, withheld fragment included,
carries across retry attempts; a failure on delivered text is never retried into success.
(The property test in test_judged_delivery_property.py checks the rule over random runs.)
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from reactivex.subject import Subject

from backends import ScriptedBackend
from engine import (
    ChunkEvent,
    CompletedEvent,
    Instruction,
    PartialValidationResult,
    QuickCheckEvent,
    Requirement,
    SimpleContext,
    StreamEvent,
    StreamRetry,
    stream_with_chunking,
)
from operators import Chunk, ChunkingStrategy, validate
from operators.verdicts import ChunkVerdict


class WordCheck(Requirement):
    """Fails on any word containing one of *forbidden*; keeps the words it judged (state that
    a retry restores: reassigned, never mutated)."""

    def __init__(self, *forbidden: str, chunking: Any = "word", longest: int | None = None) -> None:
        super().__init__(f"no {', '.join(forbidden)}", chunking=chunking)
        self.forbidden = forbidden
        self.longest = longest
        self.words: tuple[str, ...] = ()

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        self.words = (*self.words, str(chunk))
        if any(f in chunk for f in self.forbidden):
            return PartialValidationResult("fail", reason=f"{chunk!r} is forbidden")
        if self.longest is not None and len(chunk) > self.longest:
            return PartialValidationResult("fail", reason=f"{chunk!r} is too long")
        return PartialValidationResult("pass")


class SentenceCheck(Requirement):
    """Checks the stream's own chunks: fails on one containing *bad*."""

    def __init__(self, bad: str) -> None:
        super().__init__(f"no sentence with {bad}")
        self.bad = bad

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        if self.bad in chunk:
            return PartialValidationResult("fail", reason=f"{chunk!r} has {self.bad}")
        return PartialValidationResult("pass")


async def run(
    deltas: list[str],
    reqs: list[Requirement],
    *,
    retry: StreamRetry | None = None,
    continuations: list[list[str]] | None = None,
    chunking: Any = "sentence",
) -> tuple[Any, list[StreamEvent], ScriptedBackend]:
    backend = ScriptedBackend(deltas, continuations=continuations or [])
    result = await stream_with_chunking(
        Instruction("Describe."), backend, SimpleContext(), requirements=reqs, retry=retry, chunking=chunking
    )
    events = [e async for e in result.events()]
    await asyncio.wait_for(result.acomplete(), 5)
    return result, events, backend


def delivered(events: list[StreamEvent]) -> list[str]:
    return [e.text for e in events if isinstance(e, ChunkEvent)]


# -- a word at a sentence's end is judged before the sentence leaves -------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "deltas",
    [
        ["Sky is purple.", " Grass is green. "],  # the word completes with the next delta
        ["Sky is purple. ", "Grass is green. "],  # with the sentence's own delta
        ["Sky is purple."],  # at the end of the stream
    ],
)
async def test_a_sentence_whose_last_word_fails_is_never_delivered(deltas: list[str]) -> None:
    result, events, _ = await run(deltas, [WordCheck("purple")])
    assert delivered(events) == []
    failing = [e for e in events if isinstance(e, QuickCheckEvent) and not e.passed]
    assert [e.chunk_index for e in failing] == [0]  # charged to its own sentence, not the next
    assert not result.completed and result.full_text == ""
    [(_, verdict)] = result.streaming_failures
    assert verdict.reason == "'purple.' is forbidden"


@pytest.mark.asyncio
async def test_a_retry_repairs_the_sentence_with_the_failing_word_not_the_next_one() -> None:
    result, _events, backend = await run(
        ["Sky is purple.", " Grass is green. "],
        [WordCheck("purple")],
        retry=StreamRetry(max_attempts=2),
        continuations=[["Sky is blue. ", "Grass is green."]],
    )
    assert result.completed and "purple" not in result.full_text
    assert result.full_text == "Sky is blue. Grass is green."
    repair = backend.generations[1].extra["repair"]
    assert "Sky is purple." in repair  # the rejected text is the sentence that failed


@pytest.mark.asyncio
async def test_a_failure_in_the_fragment_flushed_at_the_end_is_retried_with_its_text() -> None:
    result, _, backend = await run(
        ["Grass is green. Sky is purple"],
        [WordCheck("purple")],
        retry=StreamRetry(max_attempts=2),
        continuations=[[" Sky is blue."]],
    )
    assert result.completed and result.full_text == "Grass is green. Sky is blue."
    assert "Sky is purple" in backend.generations[1].extra["repair"]


class DropsTheTail(ChunkingStrategy):
    """Sentences; the unterminated tail is never a chunk (the default ``flush``)."""

    def split(self, accumulated_text: str) -> list[str]:
        parts = accumulated_text.split(". ")
        return [p + "." for p in parts[:-1] if p]


@pytest.mark.asyncio
async def test_a_failure_in_text_the_stream_never_cuts_fails_the_run_with_that_text() -> None:
    result, events, backend = await run(
        ["Grass is green. Sky is purple"],
        [WordCheck("purple")],
        retry=StreamRetry(max_attempts=2),
        continuations=[[" Sky is blue."]],
        chunking=DropsTheTail(),
    )
    assert "Sky is purple" in backend.generations[1].extra["repair"]
    assert "purple" not in result.full_text
    assert delivered(events)[0] == "Grass is green."


# -- state, pending fragment included, carries across attempts --------------------------------


@pytest.mark.asyncio
async def test_the_withheld_word_at_the_delivered_end_is_judged_after_a_retry_by_another_check() -> None:
    words = WordCheck("nothing")
    result, events, _ = await run(
        ["One two. ", "Bad sentence. "],
        [words, SentenceCheck("Bad")],
        retry=StreamRetry(max_attempts=2),
        continuations=[[" Three four."]],
    )
    assert result.completed and result.full_text == "One two. Three four."
    # The run's copy of the word check: every word of the output once, "two." included
    # (withheld at the delivered end, judged again with what followed it after the retry,
    # its first judgment undone with the rest of the failed attempt's state).
    last = [e for e in events if isinstance(e, QuickCheckEvent)][-1]
    run_copy = last.requirements[0]
    assert isinstance(run_copy, WordCheck)
    assert run_copy.words == ("One", "two.", "Three", "four.")


@pytest.mark.asyncio
async def test_a_failure_on_text_already_delivered_is_never_retried_into_success() -> None:
    # "two." was judged and delivered; the retry continues without a space, so the word
    # becomes "two.Three", which fails: the delivered "two." cannot be taken back.
    result, events, backend = await run(
        ["One two. ", "Bad sentence. "],
        [WordCheck("nothing", longest=6), SentenceCheck("Bad")],
        retry=StreamRetry(max_attempts=3),
        continuations=[["Three four. "], ["Five. "]],
    )
    assert not result.completed
    assert isinstance(events[-1], CompletedEvent) and not events[-1].success
    assert len(backend.generations) == 2  # attempts remained, yet no third generation
    [(_, verdict)] = result.streaming_failures
    assert verdict.reason == "'two.Three' is too long"
    assert result.full_text == "One two."


class Timeline(WordCheck):
    """A word check that writes each piece it judged to a shared timeline."""

    def __init__(self, timeline: list[str], **kwargs: Any) -> None:
        super().__init__("nothing", **kwargs)
        self.timeline = timeline

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        result = await super().stream_validate(chunk, backend=backend, ctx=ctx)
        self.timeline.append(f"judged {chunk}")
        return result


@pytest.mark.asyncio
async def test_a_coarser_own_chunking_holds_each_sentence_until_its_paragraph_passed() -> None:
    timeline: list[str] = []
    result = await stream_with_chunking(
        Instruction("Describe."),
        ScriptedBackend(["One. Two.\n\n", "Three. Four."]),
        SimpleContext(),
        requirements=[Timeline(timeline, chunking="paragraph")],
    )
    result.observable.subscribe(
        on_next=lambda e: timeline.append(f"delivered {e.text}") if isinstance(e, ChunkEvent) else None
    )
    await asyncio.wait_for(result.acomplete(), 5)
    assert result.completed
    assert timeline == [
        "judged One. Two.",
        "delivered One.",
        "delivered Two.",
        "judged Three. Four.",
        "delivered Three.",
        "delivered Four.",
    ]


# -- a check that cancels the run in its first step --------------------------------------------


class CancelsTheRun(Requirement):
    """Calls ``result.cancel()`` before its first await (the result comes through *box*)."""

    def __init__(self, box: dict[str, Any], *, then_await: bool, **kwargs: Any) -> None:
        super().__init__("cancels", **kwargs)
        self.box = box
        self.then_await = then_await

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        result = self.box.get("result")
        if result is not None:
            result.cancel()
        if self.then_await:
            await asyncio.sleep(0)
        return PartialValidationResult("pass")


@pytest.mark.asyncio
@pytest.mark.parametrize("then_await", [False, True])
@pytest.mark.parametrize("chunking", [None, "word"])
async def test_a_check_that_cancels_the_run_in_its_first_step_leaves_no_task(
    then_await: bool, chunking: str | None
) -> None:
    # The suite's conftest fails the test on "Task was destroyed but it is pending!".
    for _ in range(3):
        box: dict[str, Any] = {}
        backend = ScriptedBackend(["One. ", "Two. ", "Three. "])
        result = await stream_with_chunking(
            Instruction("Count."),
            backend,
            SimpleContext(),
            requirements=[CancelsTheRun(box, then_await=then_await, chunking=chunking)],
        )
        box["result"] = result
        events = [e async for e in result.events()]
        await asyncio.wait_for(result.acomplete(), 5)
        assert isinstance(events[-1], CompletedEvent) and not events[-1].success
        assert backend.generations[0].cancelled
        del result, events
    await asyncio.sleep(0)
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert pending == []


# -- the operator alone, fed chunks only (no raw text) --------------------------------------


@pytest.mark.asyncio
async def test_validate_alone_holds_a_chunk_until_the_next_chunk_completes_its_last_word() -> None:
    subject: Subject[Chunk] = Subject()
    got: list[ChunkVerdict] = []
    done = asyncio.Event()
    subject.pipe(validate([WordCheck("purple")], backend=None, ctx=SimpleContext())).subscribe(
        got.append, on_completed=done.set
    )
    subject.on_next(Chunk("Sky is blue.", 0, 0, 12))
    assert got == []  # "blue." may still grow: not judged, not delivered
    subject.on_next(Chunk("Sky is purple.", 1, 13, 27, gap=" "))
    assert [v.chunk.chunk_index for v in got] == [0]
    subject.on_next(Chunk("Grass.", 2, 28, 34, gap=" "))
    await asyncio.wait_for(done.wait(), 5)
    assert [(v.chunk.chunk_index, v.passed) for v in got] == [(0, True), (1, False)]
