"""stream_with_chunking: every rule of the manual's docs/streaming.md, "The order of events" and "A run
is owned by its readers", on ScriptedBackend."""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

import pytest

from backends import ScriptedBackend
from engine import (
    CBlock,
    ChunkEvent,
    CompletedEvent,
    ErrorEvent,
    FullValidationEvent,
    Instruction,
    ModelOutputThunk,
    PartialValidationResult,
    QuickCheckEvent,
    Requirement,
    SimpleContext,
    StreamEvent,
    StreamingDoneEvent,
    ValidationResult,
    stream_with_chunking,
)
from operators import ChunkingStrategy
from tests.doubles import ScriptedRequirement
from tests.helpers import deltas, kinds

ACTION = Instruction("Write three sentences.")
TEXT = "First one. Second one! Third one? trailing bit"


async def run(
    text: str = TEXT,
    *,
    reqs: list[Any] | None = None,
    delay: float = 0.0,
    error: Exception | None = None,
    **kw: Any,
) -> tuple[Any, list[StreamEvent], ScriptedBackend]:
    backend = ScriptedBackend(deltas(text), delay=delay, error=error)
    result = await stream_with_chunking(ACTION, backend, SimpleContext(), requirements=reqs, **kw)
    events = [e async for e in result.events()]
    return result, events, backend


@pytest.mark.asyncio
async def test_natural_end_event_order_with_the_flushed_fragment() -> None:
    req = ScriptedRequirement()
    result, events, _ = await run(reqs=[req])
    await result.acomplete()
    assert kinds(events) == ["QuickCheckEvent", "ChunkEvent"] * 4 + [
        "StreamingDoneEvent",
        "FullValidationEvent",
        "CompletedEvent",
    ]
    chunks = [e.text for e in events if isinstance(e, ChunkEvent)]
    assert chunks == ["First one.", "Second one!", "Third one?", "trailing bit"]
    assert [e.chunk_index for e in events if isinstance(e, ChunkEvent)] == [0, 1, 2, 3]
    assert req.seen == []  # the caller's requirement is never touched: copies are used
    assert result.completed and result.full_text == TEXT
    assert result.final_validations == [ValidationResult(True)]
    assert result.streaming_failures == []
    done = next(e for e in events if isinstance(e, StreamingDoneEvent))
    assert done.full_text == TEXT
    last = events[-1]
    assert isinstance(last, CompletedEvent) and last.success and last.full_text == TEXT
    assert all(e.timestamp > 0 for e in events)


@pytest.mark.asyncio
async def test_without_requirements_there_are_no_quick_checks_and_no_validate() -> None:
    result, events, _ = await run(reqs=None)
    await result.acomplete()
    assert kinds(events) == ["ChunkEvent"] * 4 + ["StreamingDoneEvent", "CompletedEvent"]
    assert result.final_validations == [] and result.completed


@pytest.mark.asyncio
async def test_early_exit_on_fail() -> None:
    original = ScriptedRequirement({"Second one!": "fail"})
    backend = ScriptedBackend(deltas(TEXT * 50), delay=0.001)
    result = await stream_with_chunking(ACTION, backend, SimpleContext(), requirements=[original])
    streamed = [c async for c in result.astream()]
    await result.acomplete()
    events = result_events = [e async for e in result.events()]  # replayed: everything is recorded
    assert kinds(result_events) == ["QuickCheckEvent", "ChunkEvent", "QuickCheckEvent", "CompletedEvent"]
    failing = events[2]
    assert isinstance(failing, QuickCheckEvent) and not failing.passed and failing.chunk_index == 1
    assert streamed == ["First one."]  # the failing chunk is never delivered
    assert result.completed is False
    assert result.full_text == "First one."  # exactly the emitted chunks' span
    assert isinstance(events[-1], CompletedEvent) and not events[-1].success
    assert events[-1].full_text == "First one."
    assert result.final_validations == []
    [(req, res)] = result.streaming_failures
    assert res == PartialValidationResult("fail", reason="scripted")
    assert req is not original and req.seen == ["First one.", "Second one!"]  # later chunks never validated
    assert req.validated == 0
    # The generation was cancelled at once and the source saw it.
    record = backend.generations[0]
    assert record.cancelled and record.cancelled_at is not None
    assert record.deltas_sent < len(deltas(TEXT * 50))
    sent = record.deltas_sent
    await asyncio.sleep(0.02)
    assert record.deltas_sent == sent


@pytest.mark.asyncio
async def test_a_fail_on_the_flushed_fragment_is_an_early_exit_too() -> None:
    result, events, _ = await run(reqs=[ScriptedRequirement({"trailing bit": "fail"})])
    await result.acomplete()
    assert kinds(events)[-2:] == ["QuickCheckEvent", "CompletedEvent"]
    assert "StreamingDoneEvent" not in kinds(events) and not result.completed
    assert result.full_text == "First one. Second one! Third one?"


@pytest.mark.asyncio
async def test_pass_does_not_skip_final_validation() -> None:
    passing = ScriptedRequirement(
        {c: "pass" for c in ["First one.", "Second one!", "Third one?", "trailing bit"]}, final=False
    )
    result, events, _ = await run(reqs=[passing, ScriptedRequirement()])
    await result.acomplete()
    full = next(e for e in events if isinstance(e, FullValidationEvent))
    assert full.passed is False and len(full.results) == 2
    assert result.completed  # streaming succeeded; the final verdict is reported separately
    assert result.final_validations == [ValidationResult(False), ValidationResult(True)]


@pytest.mark.asyncio
async def test_a_slow_sibling_does_not_delay_the_cancel_and_reports_cancelled() -> None:
    fast = ScriptedRequirement({"First one.": "fail"})
    slow = ScriptedRequirement(delay=30)
    result, events, backend = await run(TEXT * 20, reqs=[slow, fast], delay=0.001)
    await asyncio.wait_for(result.acomplete(), 5)  # would take 30 s if the slow one were awaited
    qc = events[0]
    assert isinstance(qc, QuickCheckEvent)
    assert qc.results == (
        PartialValidationResult("unknown", reason="cancelled"),
        PartialValidationResult("fail", reason="scripted"),
    )
    assert backend.generations[0].cancelled


@pytest.mark.asyncio
async def test_backend_error_keeps_what_arrived_and_raises_once_from_acomplete() -> None:
    result, events, _ = await run(
        "Good one. Also good. half", reqs=[ScriptedRequirement()], error=ConnectionResetError("peer gone")
    )
    assert kinds(events) == ["QuickCheckEvent", "ChunkEvent"] * 2 + ["ErrorEvent", "CompletedEvent"]
    error = events[-2]
    assert (
        isinstance(error, ErrorEvent)
        and error.exception_type == "ConnectionResetError"
        and error.detail == "peer gone"
    )
    with pytest.raises(ConnectionResetError):
        await result.acomplete()
    await result.acomplete()  # raised once: the second call returns
    assert not result.completed and result.full_text == "Good one. Also good. half"
    # The generation failed: its thunk is not computed, and keeps the text and the error.
    assert not result.mot.is_computed() and result.mot.value is None
    assert result.mot.text == "Good one. Also good. half" and isinstance(
        result.mot.error, ConnectionResetError
    )


@pytest.mark.asyncio
async def test_the_error_surfaces_from_astream_when_it_reads_it_first() -> None:
    backend = ScriptedBackend(["Kept. ", "lost"], error=TimeoutError("idle"))
    result = await stream_with_chunking(ACTION, backend, SimpleContext())
    got: list[str] = []
    with pytest.raises(TimeoutError):
        async for chunk in result.astream():
            got.append(chunk)
    assert got == ["Kept."]
    await result.acomplete()  # already surfaced by astream: no second raise


@pytest.mark.asyncio
async def test_a_validator_exception_is_an_error_event_and_stops_the_generation() -> None:
    class Raises(Requirement):
        async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
            raise ArithmeticError("bad validator")

    result, events, backend = await run(TEXT * 20, reqs=[Raises()], delay=0.001)
    assert kinds(events) == ["ErrorEvent", "CompletedEvent"]
    with pytest.raises(ArithmeticError):
        await result.acomplete()
    await asyncio.sleep(0)
    assert backend.generations[0].cancelled and backend.generations[0].cancelled_at is not None


@pytest.mark.asyncio
async def test_events_never_raises() -> None:
    result, events, _ = await run(reqs=None, error=RuntimeError("x"))
    assert isinstance(events[-1], CompletedEvent) and not events[-1].success
    with pytest.raises(RuntimeError):
        await result.acomplete()


@pytest.mark.asyncio
async def test_external_cancellation_cancels_the_generation() -> None:
    backend = ScriptedBackend(["word. "] * 10_000, delay=0.001)
    result = await stream_with_chunking(
        ACTION, backend, SimpleContext(), requirements=[ScriptedRequirement()]
    )
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(result.acomplete(), 0.03)
    with pytest.raises(asyncio.CancelledError):
        await result.acomplete()
    await asyncio.sleep(0)
    record = backend.generations[0]
    assert record.cancelled and record.cancelled_at is not None and record.deltas_sent < 10_000
    events = [e async for e in result.events()]
    assert isinstance(events[-1], CompletedEvent) and not events[-1].success
    assert not result.completed


@pytest.mark.asyncio
async def test_requirements_are_copied_before_generation() -> None:
    class Counting(Requirement):
        copies = 0

        def __copy__(self) -> Counting:
            Counting.copies += 1
            clone = Counting(self.description)
            clone.__dict__.update(self.__dict__)
            return clone

    original = Counting("c")
    result, _, _ = await run(reqs=[original])
    await result.acomplete()
    assert Counting.copies == 1


@pytest.mark.asyncio
async def test_a_raising_copy_starts_no_generation() -> None:
    class Uncopyable(Requirement):
        def __copy__(self) -> Uncopyable:
            raise RuntimeError("no copies")

    backend = ScriptedBackend(["x"])
    with pytest.raises(RuntimeError, match="no copies"):
        await stream_with_chunking(ACTION, backend, SimpleContext(), requirements=[Uncopyable()])
    assert backend.generations == []


@pytest.mark.asyncio
async def test_a_non_requirement_is_a_clear_type_error() -> None:
    with pytest.raises(TypeError, match="Requirement"):
        await stream_with_chunking(ACTION, ScriptedBackend(["x"]), SimpleContext(), requirements=[42])  # type: ignore[list-item]


@pytest.mark.asyncio
async def test_astream_and_events_run_concurrently_on_independent_queues() -> None:
    backend = ScriptedBackend(deltas(TEXT), delay=0.001)
    result = await stream_with_chunking(
        ACTION, backend, SimpleContext(), requirements=[ScriptedRequirement()]
    )

    async def chunks() -> list[str]:
        return [c async for c in result.astream()]

    async def events() -> list[StreamEvent]:
        return [e async for e in result.events()]

    got_chunks, got_events = await asyncio.gather(chunks(), events())
    assert got_chunks == [e.text for e in got_events if isinstance(e, ChunkEvent)]
    assert len(got_chunks) == 4
    await result.acomplete()


@pytest.mark.asyncio
async def test_astream_and_events_are_single_consumer() -> None:
    result, _, _ = await run()
    with pytest.raises(RuntimeError, match="single-consumer"):
        async for _ in result.events():
            pass
    [c async for c in result.astream()]
    with pytest.raises(RuntimeError, match="single-consumer"):
        async for _ in result.astream():
            pass


@pytest.mark.asyncio
async def test_as_thunk_before_and_after_completion() -> None:
    backend = ScriptedBackend(deltas(TEXT), delay=0.001)
    result = await stream_with_chunking(ACTION, backend, SimpleContext())
    with pytest.raises(RuntimeError, match="acomplete"):
        result.as_thunk()
    await result.acomplete()
    thunk = result.as_thunk()
    assert thunk.is_computed() and thunk.value == result.full_text == TEXT
    assert thunk.generation.model == "scripted" and thunk.generation is not result.mot.generation


@pytest.mark.asyncio
async def test_as_thunk_after_an_early_exit_holds_the_emitted_span() -> None:
    result, _, _ = await run(reqs=[ScriptedRequirement({"Third one?": "fail"})])
    await result.acomplete()
    assert result.as_thunk().value == "First one. Second one!"


@pytest.mark.asyncio
async def test_unknown_chunking_alias_is_a_value_error_before_any_generation() -> None:
    backend = ScriptedBackend(["x"])
    with pytest.raises(ValueError, match="'sentence', 'word', 'paragraph'"):
        await stream_with_chunking(ACTION, backend, SimpleContext(), chunking="sentance")
    assert backend.generations == []


@pytest.mark.asyncio
async def test_a_backend_that_returns_a_computed_thunk_is_a_runtime_error() -> None:
    class Eager:
        async def generate_from_context(
            self, action: Any, ctx: Any, *, format: Any = None, model_options: Any = None
        ) -> Any:
            thunk: ModelOutputThunk[str] = ModelOutputThunk(value="all at once")
            return thunk, ctx.add(action).add(thunk)

    with pytest.raises(RuntimeError, match=r"does not honour ModelOption\.STREAM"):
        await stream_with_chunking(ACTION, Eager(), SimpleContext())  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_a_chunker_that_breaks_the_rules_is_reported_naming_it() -> None:
    class Liar(ChunkingStrategy):
        def split(self, accumulated_text: str) -> list[str]:
            return ["not in the text"] if len(accumulated_text) > 5 else []

    result, events, _ = await run(chunking=Liar())
    assert kinds(events) == ["ErrorEvent", "CompletedEvent"]
    with pytest.raises(ValueError, match="Liar"):
        await result.acomplete()
    assert result.mot.is_computed()  # the generation was stopped, its text kept


@pytest.mark.asyncio
async def test_word_and_paragraph_chunking() -> None:
    _, events, _ = await run("alpha beta\n\ngamma", chunking="word")
    assert [e.text for e in events if isinstance(e, ChunkEvent)] == ["alpha", "beta", "gamma"]
    _, events, _ = await run("alpha beta\n\ngamma", chunking="paragraph")
    assert [e.text for e in events if isinstance(e, ChunkEvent)] == ["alpha beta", "gamma"]


@pytest.mark.asyncio
async def test_validation_backend_receives_the_checks() -> None:
    judge = ScriptedBackend(["yes"])
    req = ScriptedRequirement()
    backend = ScriptedBackend(deltas(TEXT))
    result = await stream_with_chunking(
        ACTION, backend, SimpleContext(), requirements=[req], validation_backend=judge
    )
    await result.acomplete()
    events = [e async for e in result.events()]
    qc = next(e for e in events if isinstance(e, QuickCheckEvent))
    assert qc.requirements[0].backends and all(b is judge for b in qc.requirements[0].backends)  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_validators_get_the_generation_context_holding_the_output() -> None:
    class LastOutput(Requirement):
        async def validate(
            self, backend: Any, ctx: Any, *, format: Any = None, model_options: Any = None
        ) -> ValidationResult:
            return ValidationResult(await ctx.last_output().avalue() == TEXT)

    result, _, _ = await run(reqs=[LastOutput()])
    await result.acomplete()
    assert result.final_validations == [ValidationResult(True)]
    assert result.ctx.as_list() == [ACTION, result.mot]


@pytest.mark.asyncio
async def test_validation_fn_and_llm_as_judge_defaults() -> None:
    by_fn = Requirement("short", validation_fn=lambda text: len(text) < 1000)
    result, _, _ = await run(reqs=[by_fn])
    await result.acomplete()
    assert result.final_validations == [ValidationResult(True)]

    judge = ScriptedBackend(["Yes", ", it is."])
    result = await stream_with_chunking(
        ACTION,
        ScriptedBackend(deltas(TEXT)),
        SimpleContext(),
        requirements=[Requirement("is polite")],
        validation_backend=judge,
    )
    await result.acomplete()
    assert result.final_validations[0].as_bool() and result.final_validations[0].reason == "Yes, it is."
    assert len(judge.generations) == 1


@pytest.mark.asyncio
async def test_the_observable_replays_every_event_for_composition() -> None:
    result, events, _ = await run(reqs=[ScriptedRequirement()])
    await result.acomplete()
    replayed: list[StreamEvent] = []
    result.observable.subscribe(replayed.append)
    assert replayed == events


@pytest.mark.asyncio
async def test_original_requirement_objects_are_untouched() -> None:
    original = ScriptedRequirement({"First one.": "pass"})
    before = copy.copy(original.__dict__)
    result, _, _ = await run(reqs=[original])
    await result.acomplete()
    assert original.__dict__ == before and original.seen == [] and original.validated == 0


@pytest.mark.asyncio
async def test_plain_cblock_action_and_thousands_of_deltas() -> None:
    text = "Tick. " * 2000
    backend = ScriptedBackend(list(text))
    result = await stream_with_chunking(
        CBlock("go"), backend, SimpleContext(), requirements=[ScriptedRequirement()]
    )
    chunks = [c async for c in result.astream()]
    await result.acomplete()
    assert chunks == ["Tick."] * 2000 and result.full_text == text


@pytest.mark.asyncio
async def test_cancel_reaches_the_source_at_once_not_at_the_next_token() -> None:
    verdict_at: list[float] = []

    class FailsFirst(Requirement):
        async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
            verdict_at.append(time.perf_counter())
            return PartialValidationResult("fail")

    # One token every 2 s: a cancel that waited for the next token would take ~2 s.
    backend = ScriptedBackend(["Done. ", "never ", "sent. "], delay=2.0)
    result = await stream_with_chunking(ACTION, backend, SimpleContext(), requirements=[FailsFirst()])
    await asyncio.wait_for(result.acomplete(), 10)
    record = backend.generations[0]
    assert record.cancelled_at is not None and record.deltas_sent == 1
    assert record.cancelled_at - verdict_at[0] < 1.0  # generous: measured in microseconds by benchmarks/
