"""stream_with_chunking's rules hold with the HTTP backends, over loopback, for both wire formats.

The point of these tests is the server's view: an early exit on "fail" (or an external
cancel) closes the HTTP connection, the server sees the disconnect, and it writes
(almost) nothing after the verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from backends import IncompleteStreamError, OllamaBackend, OpenAIBackend, ServerError
from backends._http import HttpBackend
from engine import (
    ChunkEvent,
    CompletedEvent,
    ErrorEvent,
    Instruction,
    QuickCheckEvent,
    SimpleContext,
    stream_with_chunking,
)
from tests.doubles import ScriptedRequirement
from tests.fake_servers import FakeOllamaServer, FakeOpenAIServer, FakeServer, Reply
from tests.helpers import deltas, kinds

KINDS = ["ollama", "openai"]
ACTION = Instruction("Write three sentences.")
TEXT = "First one. Second one! Third one? trailing bit"


@contextlib.asynccontextmanager
async def serve(kind: str, reply: Reply) -> AsyncIterator[tuple[FakeServer, HttpBackend]]:
    server: FakeServer = FakeOllamaServer(reply) if kind == "ollama" else FakeOpenAIServer(reply)
    async with server:
        backend: HttpBackend = (
            OllamaBackend("m", base_url=server.url)
            if kind == "ollama"
            else OpenAIBackend("m", base_url=server.url)
        )
        async with backend:
            yield server, backend


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_natural_end_over_http(kind: str) -> None:
    async with serve(kind, Reply(deltas=deltas(TEXT), delay=0.001)) as (server, backend):
        result = await stream_with_chunking(
            ACTION, backend, SimpleContext(), requirements=[ScriptedRequirement()]
        )
        events = [e async for e in result.events()]
        await result.acomplete()
    assert kinds(events) == ["QuickCheckEvent", "ChunkEvent"] * 4 + [
        "StreamingDoneEvent",
        "FullValidationEvent",
        "CompletedEvent",
    ]
    assert [e.text for e in events if isinstance(e, ChunkEvent)] == [
        "First one.",
        "Second one!",
        "Third one?",
        "trailing bit",
    ]
    assert result.completed and result.full_text == TEXT
    generation = result.mot.generation
    assert generation.done_reason == "stop" and generation.connection_closed_at is None
    assert server.requests[0].completed_at is not None and server.requests[0].disconnected_at is None


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_without_requirements_there_are_no_quick_checks(kind: str) -> None:
    async with serve(kind, Reply(deltas=deltas(TEXT))) as (_, backend):
        result = await stream_with_chunking(ACTION, backend, SimpleContext())
        events = [e async for e in result.events()]
        await result.acomplete()
    assert kinds(events) == ["ChunkEvent"] * 4 + ["StreamingDoneEvent", "CompletedEvent"]
    assert result.completed and result.full_text == TEXT and result.final_validations == []


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_early_exit_on_fail_closes_the_server_connection(kind: str) -> None:
    many = deltas(TEXT * 200)
    async with serve(kind, Reply(deltas=many, delay=0.002)) as (server, backend):
        req = ScriptedRequirement({"Second one!": "fail"})
        result = await stream_with_chunking(ACTION, backend, SimpleContext(), requirements=[req])
        streamed = [c async for c in result.astream()]
        await result.acomplete()
        events = [e async for e in result.events()]
        record = server.requests[0]
        seen = await record.wait_disconnected(within=2.0)
    assert kinds(events) == ["QuickCheckEvent", "ChunkEvent", "QuickCheckEvent", "CompletedEvent"]
    assert streamed == ["First one."] and result.full_text == "First one." and not result.completed
    failing = events[2]
    assert isinstance(failing, QuickCheckEvent) and not failing.passed
    [(copy, verdict)] = result.streaming_failures
    assert verdict.success == "fail" and copy.seen == ["First one.", "Second one!"]  # type: ignore[attr-defined]
    generation = result.mot.generation
    assert generation.cancelled_at is not None and generation.connection_closed_at is not None
    failed_at = copy.failed_at  # type: ignore[attr-defined]
    assert failed_at is not None and failed_at <= generation.connection_closed_at < seen
    assert record.frames_written_after(failed_at) <= 1
    assert record.completed_at is None and record.frames_written < len(many)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_a_server_dropping_the_stream_delivers_the_chunks_first_then_the_error_once(kind: str) -> None:
    reply = Reply(deltas=deltas("One. Two. Thr"), ending="close")
    async with serve(kind, reply) as (_, backend):
        result = await stream_with_chunking(
            ACTION, backend, SimpleContext(), requirements=[ScriptedRequirement()]
        )
        events = [e async for e in result.events()]
        with pytest.raises(IncompleteStreamError):
            await result.acomplete()
        await result.acomplete()  # raised once only
    assert kinds(events)[-2:] == ["ErrorEvent", "CompletedEvent"]
    assert [e.text for e in events if isinstance(e, ChunkEvent)] == ["One.", "Two."]
    error = events[-2]
    assert isinstance(error, ErrorEvent) and error.exception_type == "IncompleteStreamError"
    last = events[-1]
    assert isinstance(last, CompletedEvent) and not last.success
    assert result.mot.text == "One. Two. Thr"  # nothing received is lost


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_an_error_status_is_an_error_event(kind: str) -> None:
    async with serve(kind, Reply(status=503, error="overloaded")) as (_, backend):
        result = await stream_with_chunking(ACTION, backend, SimpleContext())
        chunks = []
        with pytest.raises(ServerError, match="overloaded"):
            async for chunk in result.astream():
                chunks.append(chunk)
        await result.acomplete()  # already raised by astream()
    assert chunks == [] and not result.completed


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_external_cancellation_closes_the_server_connection(kind: str) -> None:
    async with serve(kind, Reply(deltas=deltas(TEXT * 100), delay=0.01)) as (server, backend):
        result = await stream_with_chunking(
            ACTION, backend, SimpleContext(), requirements=[ScriptedRequirement()]
        )
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(result.acomplete(), 0.1)
        with pytest.raises(asyncio.CancelledError):
            await result.acomplete()
        await server.requests[0].wait_disconnected(within=2.0)
    assert result.mot.generation.connection_closed_at is not None and not result.completed
