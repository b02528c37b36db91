"""A run's lifetime: Mellea 0.8's ``stream()`` and the ``StreamChunkingResult`` it shares.

Leaving ``async with`` (end, ``break``, exception), ``cancel()``/``aclose()``, leaving
``astream()``/``events()`` early, or cancelling the thunk ends the run with
``CompletedEvent(success=False)`` and stops the generation; ``result.observable`` reads
without owning the run.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from backends import OpenAIBackend, ScriptedBackend
from engine import (
    ChunkEvent,
    CompletedEvent,
    ErrorEvent,
    EventStreamer,
    FullValidationEvent,
    Instruction,
    QuickCheckEvent,
    SimpleContext,
    Streamer,
    StreamEvent,
    StreamingDoneEvent,
    stream,
    stream_with_chunking,
)
from tests.doubles import ScriptedRequirement
from tests.fake_servers import FakeOpenAIServer, Reply
from tests.helpers import kinds

ACTION = Instruction("Write.")
TEXT = "First one. Second one! Third one? trailing bit"
DELTAS = [TEXT[i : i + 4] for i in range(0, len(TEXT), 4)]


def endless(delay: float = 0.001) -> ScriptedBackend:
    return ScriptedBackend(["Tick. "] * 10_000, delay=delay)


# -- stream(): Mellea 0.8's API ---------------------------------------------------------


@pytest.mark.asyncio
async def test_stream_without_chunking_yields_the_raw_deltas() -> None:
    backend = ScriptedBackend(DELTAS)
    async with await stream(ACTION, backend, SimpleContext()) as s:
        assert isinstance(s, Streamer)
        chunks = [c async for c in s]
    assert chunks == DELTAS
    assert s.completed_normally and not s.failed_early and s.failure_reason is None
    assert s.full_text == TEXT and s.mot is not None and s.mot.value == TEXT
    assert s.streaming_id and s.result.completed


@pytest.mark.asyncio
async def test_stream_with_chunking_and_requirements() -> None:
    req = ScriptedRequirement()
    async with await stream(
        ACTION, ScriptedBackend(DELTAS), SimpleContext(), chunking="sentence", requirements=[req]
    ) as s:
        chunks = [c async for c in s]
    assert chunks == ["First one.", "Second one!", "Third one?", "trailing bit"]
    assert [v.as_bool() for v in s.final_validations] == [True] and req.validated == 0  # a copy was used


@pytest.mark.asyncio
async def test_stream_stops_on_a_fail() -> None:
    backend = endless()
    failing = ScriptedRequirement({"Tick.": "fail"})
    async with await stream(
        ACTION, backend, SimpleContext(), chunking="sentence", requirements=[failing]
    ) as s:
        chunks = [c async for c in s]
    assert chunks == []
    assert s.failed_early and not s.completed_normally and s.mot is None
    assert s.failure_reason == "Streaming validation failed: scripted"
    assert len(s.streaming_failures) == 1 and s.final_validations == []
    assert backend.generations[0].cancelled_at is not None


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["break", "exception", "no-iteration"])
async def test_leaving_the_block_cancels_the_generation(how: str) -> None:
    backend = endless()
    with contextlib.suppress(KeyError):
        async with await stream(ACTION, backend, SimpleContext(), chunking="sentence") as s:
            if how != "no-iteration":
                async for _ in s:
                    if how == "break":
                        break
                    raise KeyError("user code failed")
    record = backend.generations[0]
    # Already stopped when the block is left: the producer ran its cleanup (or never started).
    assert record.cancelled and record.deltas_sent < 10_000
    assert record.cancelled_at is not None if how != "no-iteration" else record.deltas_sent == 0
    assert not s.completed_normally and not s.result.completed
    assert isinstance(s.result.observable, object)
    events = [e async for e in s.result.events()]
    assert isinstance(events[-1], CompletedEvent) and not events[-1].success


@pytest.mark.asyncio
async def test_break_then_iterate_again_resumes() -> None:
    async with await stream(ACTION, ScriptedBackend(DELTAS), SimpleContext(), chunking="sentence") as s:
        first: list[str] = []
        async for chunk in s:
            first.append(chunk)
            break
        rest = [c async for c in s]
    assert first + rest == ["First one.", "Second one!", "Third one?", "trailing bit"]


@pytest.mark.asyncio
async def test_stream_raises_the_backend_error_after_the_chunks_before_it() -> None:
    backend = ScriptedBackend(["Kept. ", "lost"], error=ConnectionResetError("peer gone"))
    got: list[str] = []
    with pytest.raises(ConnectionResetError):
        async with await stream(ACTION, backend, SimpleContext(), chunking="sentence") as s:
            async for chunk in s:
                got.append(chunk)
    assert got == ["Kept."]
    await s.result.acomplete()  # raised once, by the iteration


@pytest.mark.asyncio
async def test_stream_as_events() -> None:
    async with await stream(
        ACTION,
        ScriptedBackend(DELTAS),
        SimpleContext(),
        chunking="sentence",
        requirements=[ScriptedRequirement()],
        as_events=True,
    ) as s:
        assert isinstance(s, EventStreamer)
        events = [e async for e in s]
    assert kinds(events) == ["QuickCheckEvent", "ChunkEvent"] * 4 + [
        "StreamingDoneEvent",
        "FullValidationEvent",
        "CompletedEvent",
    ]
    assert s.completed_normally and s.full_text == TEXT


@pytest.mark.asyncio
async def test_stream_as_events_resumes_and_raises_after_the_terminal_events_as_in_mellea_0_8() -> None:
    backend = ScriptedBackend(["One. ", "Two. "], error=TimeoutError("idle"))
    events: list[StreamEvent] = []
    with pytest.raises(TimeoutError):
        async with await stream(ACTION, backend, SimpleContext(), chunking="sentence", as_events=True) as s:
            async for event in s:
                events.append(event)
                break
            async for event in s:  # its own iterator: resumes
                events.append(event)
    assert kinds(events) == ["ChunkEvent", "ChunkEvent", "ErrorEvent", "CompletedEvent"]


@pytest.mark.asyncio
async def test_stream_rejects_an_unknown_alias_before_generating() -> None:
    backend = ScriptedBackend(["x"])
    with pytest.raises(ValueError, match="Unknown chunking alias"):
        await stream(ACTION, backend, SimpleContext(), chunking="letter")
    assert backend.generations == []


@pytest.mark.asyncio
async def test_leaving_the_block_closes_the_http_connection() -> None:
    async with (
        FakeOpenAIServer(Reply(deltas=["Tick. "] * 10_000, delay=0.002)) as server,
        OpenAIBackend("m", base_url=server.url, api_key="k") as backend,
    ):
        async with await stream(ACTION, backend, SimpleContext(), chunking="sentence") as s:
            async for _ in s:
                break
        # Closed when the block was left, not later.
        assert s.result.mot.generation.connection_closed_at is not None
        await server.requests[0].wait_disconnected(within=2.0)


# -- StreamChunkingResult's lifetime -----------------------------------------------------


@pytest.mark.asyncio
async def test_leaving_async_with_result_cancels_the_run() -> None:
    backend = endless()
    async with await stream_with_chunking(
        ACTION, backend, SimpleContext(), requirements=[ScriptedRequirement()]
    ) as result:
        async for _ in result.astream():
            break
    assert backend.generations[0].cancelled_at is not None
    await result.acomplete()  # a cancel is not an error
    assert not result.completed


@pytest.mark.asyncio
async def test_cancel_ends_the_run_now_with_the_delivered_span() -> None:
    backend = endless()
    req = ScriptedRequirement(delay=0.05)
    result = await stream_with_chunking(ACTION, backend, SimpleContext(), requirements=[req])
    events: list[StreamEvent] = []
    result.observable.subscribe(events.append)
    while not any(isinstance(e, ChunkEvent) for e in events):
        await asyncio.sleep(0.005)
    result.cancel()
    # Synchronous: the run has ended, the generation is cancelled, the validator in flight too.
    assert isinstance(events[-1], CompletedEvent) and not events[-1].success
    assert backend.generations[0].cancelled
    await result.aclose()
    assert backend.generations[0].cancelled_at is not None
    for _ in range(100):  # the validator's task sees its cancel a loop turn or two later
        if req.cancelled:
            break
        await asyncio.sleep(0.001)
    assert len(req.cancelled) == 1
    assert not any(isinstance(e, ErrorEvent | StreamingDoneEvent | FullValidationEvent) for e in events)
    delivered = [e.text for e in events if isinstance(e, ChunkEvent)]
    assert result.full_text == " ".join(delivered)
    await result.acomplete()
    result.cancel()  # idempotent


@pytest.mark.asyncio
@pytest.mark.parametrize("reader", ["astream", "events"])
async def test_leaving_a_reader_early_cancels_the_run(reader: str) -> None:
    backend = endless()
    result = await stream_with_chunking(ACTION, backend, SimpleContext())
    iterator = result.astream() if reader == "astream" else result.events()
    async with contextlib.aclosing(iterator):  # type: ignore[type-var]
        async for _ in iterator:
            break
    assert backend.generations[0].cancelled
    await result.acomplete()
    assert not result.completed


@pytest.mark.asyncio
async def test_a_plain_break_cancels_the_run_once_the_iterator_is_dropped() -> None:
    backend = endless()
    result = await stream_with_chunking(ACTION, backend, SimpleContext())
    async for _ in result.astream():
        break
    # No aclosing(): asyncio closes the abandoned generator on a later loop turn.
    await asyncio.wait_for(result.acomplete(), 5)
    assert backend.generations[0].cancelled and not result.completed


@pytest.mark.asyncio
async def test_cancelling_the_reading_task_cancels_the_run() -> None:
    backend = endless()
    result = await stream_with_chunking(ACTION, backend, SimpleContext())

    async def read() -> None:
        async for _ in result.events():
            pass

    task = asyncio.create_task(read())
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert backend.generations[0].cancelled
    await result.acomplete()
    assert not result.completed


@pytest.mark.asyncio
async def test_cancelling_through_the_thunk_ends_the_run_without_final_validation() -> None:
    backend = endless()
    req = ScriptedRequirement()
    result = await stream_with_chunking(ACTION, backend, SimpleContext(), requirements=[req])
    chunks: list[str] = []
    async for chunk in result.astream():
        chunks.append(chunk)
        if len(chunks) == 3:
            await result.mot.cancel_generation()
    await result.acomplete()  # a cancel, not an error
    events = [e async for e in result.events()]
    assert not result.completed and req.validated == 0
    assert not any(isinstance(e, ErrorEvent | StreamingDoneEvent | FullValidationEvent) for e in events)
    assert isinstance(events[-1], CompletedEvent) and not events[-1].success
    assert result.mot.is_computed() and backend.generations[0].cancelled
    assert result.full_text == " ".join(chunks) and len(chunks) >= 3


@pytest.mark.asyncio
async def test_the_observable_reads_without_owning_the_run() -> None:
    backend = ScriptedBackend(DELTAS, delay=0.001)
    result = await stream_with_chunking(ACTION, backend, SimpleContext())
    subscription = result.observable.subscribe(lambda _: None)
    subscription.dispose()
    await result.acomplete()
    assert result.completed and not backend.generations[0].cancelled


@pytest.mark.asyncio
async def test_as_thunk_after_an_error_is_a_failed_thunk() -> None:
    backend = ScriptedBackend(["Kept. ", "half"], error=ConnectionResetError("gone"))
    result = await stream_with_chunking(ACTION, backend, SimpleContext())
    with pytest.raises(ConnectionResetError):
        await result.acomplete()
    thunk = result.as_thunk()
    assert not thunk.is_computed() and thunk.text == "Kept. half"
    with pytest.raises(ConnectionResetError):
        await thunk.avalue()
    assert thunk.generation.deltas_received == result.mot.generation.deltas_received


@pytest.mark.asyncio
async def test_quick_check_event_is_still_reported_on_a_fail() -> None:
    result = await stream_with_chunking(
        ACTION,
        ScriptedBackend(DELTAS),
        SimpleContext(),
        requirements=[ScriptedRequirement({"Second one!": "fail"})],
    )
    events = [e async for e in result.events()]
    assert kinds(events)[-2:] == ["QuickCheckEvent", "CompletedEvent"]
    assert isinstance(events[-2], QuickCheckEvent) and not events[-2].passed
