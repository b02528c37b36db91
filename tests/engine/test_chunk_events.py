"""What a ``ChunkEvent`` carries and what ``astream()`` yields from it.

The event log keeps every event for the run's life, so a ``ChunkEvent`` keeps the chunk's text
as a plain ``str`` and its place as fields (``start``, ``end``, ``gap``; ``path`` and ``value``
for JSON chunking), not the ``Chunk`` the requirements judged. ``astream()`` yields a ``Chunk``
rebuilt from the event: equal to the judged one, text and place.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.scripted import ScriptedBackend
from engine import (
    ChunkEvent,
    PartialValidationResult,
    Requirement,
    SimpleContext,
    ValidationResult,
    stream_with_chunking,
)
from operators.chunking import Chunk

TEXT = "First sentence here.  Second one!\n\nThird, with a tail"


class Recorder(Requirement):
    """Keeps what ``stream_validate`` received (the engine copies requirements: a shared list)."""

    def __init__(self, seen: list[Any]) -> None:
        super().__init__("records its chunks")
        self.seen = seen

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        self.seen.append(chunk)
        return PartialValidationResult("pass")

    async def validate(
        self, backend: Any, ctx: Any, *, format: Any = None, model_options: Any = None
    ) -> ValidationResult:
        return ValidationResult(True)


def place(chunk: Any) -> tuple[Any, ...]:
    return (str(chunk), chunk.chunk_index, chunk.start, chunk.end, chunk.gap, chunk.path, chunk.value)


async def chunk_events(
    deltas: list[str], chunking: Any = "sentence"
) -> tuple[list[Any], list[ChunkEvent], str]:
    """(what the requirement received, the ChunkEvents, full_text)."""
    seen: list[Any] = []
    result = await stream_with_chunking(
        "p", ScriptedBackend(deltas), SimpleContext(), requirements=[Recorder(seen)], chunking=chunking
    )
    events = [e async for e in result.events() if isinstance(e, ChunkEvent)]
    await result.acomplete()
    return seen, events, result.full_text


async def streamed_chunks(deltas: list[str], chunking: Any = "sentence") -> list[str]:
    result = await stream_with_chunking("p", ScriptedBackend(deltas), SimpleContext(), chunking=chunking)
    chunks = [chunk async for chunk in result.astream()]
    await result.acomplete()
    return chunks


@pytest.mark.asyncio
async def test_requirements_receive_chunks_and_astream_yields_equal_chunks_with_their_place() -> None:
    deltas = [TEXT[i : i + 5] for i in range(0, len(TEXT), 5)]
    seen, _events, full_text = await chunk_events(deltas)
    streamed = await streamed_chunks(deltas)
    assert all(type(chunk) is Chunk for chunk in seen)
    assert all(type(chunk) is Chunk for chunk in streamed)
    assert [place(c) for c in streamed] == [place(c) for c in seen]
    assert [c.gap for c in streamed] == ["", "  ", "\n\n"]
    for chunk in streamed:
        assert full_text[chunk.start : chunk.end] == chunk


@pytest.mark.asyncio
async def test_a_chunk_event_keeps_plain_text_and_the_place_and_stays_hashable() -> None:
    deltas = [TEXT[i : i + 7] for i in range(0, len(TEXT), 7)]
    seen, events, full_text = await chunk_events(deltas)
    assert [type(e.text) for e in events] == [str] * len(seen)
    assert [(e.text, e.chunk_index, e.start, e.end, e.gap) for e in events] == [
        (str(c), c.chunk_index, c.start, c.end, c.gap) for c in seen
    ]
    assert len({hash(e) for e in events}) == len(events)
    assert "".join(e.gap + e.text for e in events) == full_text


def test_a_chunk_event_made_without_a_place_spans_its_text() -> None:
    event = ChunkEvent(text="Hi.", chunk_index=0)
    assert (event.start, event.end, event.gap) == (0, 3, "")
    placed = ChunkEvent(text="Hi.", chunk_index=2, start=10, gap=" ")
    assert (placed.start, placed.end, placed.gap) == (10, 13, " ")


@pytest.mark.asyncio
async def test_json_chunking_keeps_path_and_value_on_events_and_streamed_chunks() -> None:
    text = json.dumps({"products": [{"n": 1}, {"n": [2, 3]}]})
    deltas = [text[i : i + 6] for i in range(0, len(text), 6)]
    seen, events, _full_text = await chunk_events(deltas, chunking="json")
    streamed = await streamed_chunks(deltas, chunking="json")
    assert [(e.path, e.value) for e in events] == [
        ("$.products[0]", {"n": 1}),
        ("$.products[1]", {"n": [2, 3]}),
    ]
    assert [place(c) for c in streamed] == [place(c) for c in seen]
    assert [(c.path, c.value) for c in streamed] == [(e.path, e.value) for e in events]
    assert len({hash(e) for e in events}) == len(events)  # value (a dict) is left out of the hash


@settings(max_examples=40, deadline=None)
@given(
    words=st.lists(st.sampled_from(["Hi.", "a", "b!", "c?", " ", "  ", "\n\n", "end"]), max_size=25),
    cut=st.integers(min_value=1, max_value=9),
)
def test_streamed_chunks_equal_judged_chunks_for_any_text_and_slicing(words: list[str], cut: int) -> None:
    text = " ".join(words)
    deltas = [text[i : i + cut] for i in range(0, len(text), cut)]

    async def both() -> tuple[list[Any], list[ChunkEvent], str, list[str]]:
        seen, events, full_text = await chunk_events(deltas)
        return seen, events, full_text, await streamed_chunks(deltas)

    seen, events, full_text, streamed = asyncio.run(both())
    assert [place(c) for c in streamed] == [place(c) for c in seen]
    assert "".join(e.gap + e.text for e in events) == full_text[: events[-1].end if events else 0]
