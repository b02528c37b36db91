"""What a paced stream costs the process, counted (never timed): frames a delta, objects a stream.

With thousands of paced streams on one loop the CPU goes to work done for every delta and to
the cycle collector walking every stream's objects, so both are budgets:

* a delta that completes no chunk runs at most six Python frames of the engine and its
  operators (the backend's producer aside): the pump's resume, the thunk taking the delta (and
  a store recording it, if the thunk keeps its deltas in one), the chunk link, the Chunker and
  the strategy's ``split`` (each link handles an item in one frame);
* a running stream holds a bounded number of objects the collector tracks beyond those of a
  plain task reading the same source (its subscriptions are objects of their own, not closures
  costing a function, cells and a tuple each).
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest

from engine import (
    CBlock,
    ChunkEvent,
    GenerationInfo,
    ModelOutputThunk,
    MustNotMatch,
    PartialValidationResult,
    Requirement,
    SimpleContext,
    ValidationResult,
    req,
    stream_with_chunking,
)
from engine.core.asyncrx import from_async_iterable
from tests.isolated import run_isolated

COUNT_FRAMES = r"""
import asyncio, sys
from backends import ScriptedBackend
from engine import (
    Instruction, PartialValidationResult, Requirement, SimpleContext, ValidationResult, stream_with_chunking,
)

OURS = ("/engine/", "/operators/")  # the backend's producer is not counted

class Unknown(Requirement):
    async def stream_validate(self, chunk, *, backend, ctx):
        return PartialValidationResult("unknown")

    async def validate(self, backend, ctx, *, format=None, model_options=None):
        return ValidationResult(True)

def frames_of_ours(n):
    count = [0]
    def profile(frame, event, arg):
        if event == "call" and any(part in frame.f_code.co_filename for part in OURS):
            count[0] += 1
    async def run():
        # No sentence ends before the last delta: every delta but the flush completes no chunk.
        backend = ScriptedBackend(["word "] * n)
        reqs = [Unknown(), Unknown(), Unknown()]
        result = await stream_with_chunking(Instruction("hi"), backend, SimpleContext(), requirements=reqs)
        sys.setprofile(profile)
        async for _ in result.events():
            pass
        await result.acomplete()
        sys.setprofile(None)
    asyncio.run(run())
    return count[0]

frames_of_ours(20)  # warm-up: first-time work (caches, lazy imports) is not per delta
small, large = frames_of_ours(20), frames_of_ours(420)
print((large - small) / 400)
"""


def test_a_delta_that_completes_no_chunk_runs_at_most_six_frames_of_ours() -> None:
    per_delta = float(run_isolated(COUNT_FRAMES))
    # A store may merge its blocks now and then: a fraction of a frame a delta, amortised.
    assert per_delta <= 6.25, f"{per_delta:.2f} Python frames of the engine per delta (budget: 6)"


class Unknown(Requirement):
    """Says "unknown" on every chunk and passes the final check: the cost of a check, minus the check."""

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        return PartialValidationResult("unknown")

    async def validate(
        self, backend: Any, ctx: Any, *, format: Any = None, model_options: Any = None
    ) -> ValidationResult:
        return ValidationResult(True)


STREAMS = 40
DELTAS_BEFORE_COUNT = 60  # a few chunks in: the count includes what the run keeps per chunk
# Tracked objects a running stream (three checks, a few chunks in) holds beyond a plain reader's:
# about 126 (it was about 198 with a closure per subscription, about 144 with the result's and
# the thunk's callbacks as bound methods in a holder, the result's log's error handler a closure
# around a WeakMethod, and a closure per observable).
OBJECTS_BUDGET = 132


@pytest.mark.asyncio
async def test_a_running_stream_holds_a_bounded_number_of_tracked_objects() -> None:
    text = "Some words make a sentence here. " * 40
    deltas = [text[i : i + 4] for i in range(0, len(text), 4)]
    halfway = asyncio.Event()
    resume = asyncio.Event()
    reached = [0]

    async def source() -> AsyncIterator[str]:
        for i, delta in enumerate(deltas):
            if i == DELTAS_BEFORE_COUNT:
                reached[0] += 1
                if reached[0] == STREAMS:
                    halfway.set()
                await resume.wait()
            yield delta

    class Backend:
        async def generate_from_context(self, action: Any, ctx: Any, **kwargs: Any) -> Any:
            thunk: Any = ModelOutputThunk(from_async_iterable(source), generation=GenerationInfo())
            return thunk, ctx.add(action).add(thunk)

    async def pipeline() -> None:
        reqs = [Unknown(), Unknown(), Unknown()]
        result = await stream_with_chunking(CBlock("p"), Backend(), SimpleContext(), requirements=reqs)
        async for _ in result.events():
            pass
        await result.acomplete()

    async def plain() -> None:
        received = [delta async for delta in source()]
        assert received

    async def objects_per_stream(stream: Any) -> float:
        halfway.clear()
        resume.clear()
        reached[0] = 0
        gc.collect()
        before = len(gc.get_objects())
        tasks = [asyncio.create_task(stream()) for _ in range(STREAMS)]
        await asyncio.wait_for(halfway.wait(), 30)
        await asyncio.sleep(0)  # the last stream's chunk reaches its reader
        gc.collect()
        held = (len(gc.get_objects()) - before) / STREAMS
        resume.set()
        await asyncio.gather(*tasks)
        return held

    await pipeline_once(pipeline, resume)  # first-time work (lazy imports, caches) outside the count
    floor = await objects_per_stream(plain)
    ours = await objects_per_stream(pipeline)
    assert ours - floor <= OBJECTS_BUDGET, (
        f"a running stream holds {ours:.1f} tracked objects, a plain reader {floor:.1f}: "
        f"{ours - floor:.1f} more (budget {OBJECTS_BUDGET})"
    )


async def pipeline_once(pipeline: Any, resume: asyncio.Event) -> None:
    resume.set()
    await pipeline()


# What a run keeps for each delivered chunk until it ends (its event log): the ChunkEvent and
# the QuickCheckEvent, with the chunk's text as a plain str and its place as fields. Checks
# that answer with shared result objects (the built-in ones on a pass or "no opinion") add
# nothing more: consecutive verdicts with the same results share one results tuple. (It was
# seven objects a chunk with three checks: the Chunk, kept as the event's text, a results
# tuple, and a fresh result from each check.)
OBJECTS_PER_CHUNK_BUDGET = 2.2
# Traced bytes a chunk of about 40 characters, its text in the thunk's store included: about 470
# (it was about 1,050 with the Chunk, a results tuple and fresh pass results kept a chunk, an
# end offset kept beside start + len(text), and 8 bytes a delta for the store's offsets).
BYTES_PER_CHUNK_BUDGET = 540


def _sentences(count: int) -> str:
    return "".join(f"Sentence number {i} says a few words. " for i in range(count))


async def _kept_after(chunks: int, requirements: Any) -> tuple[int, int]:
    """(tracked objects, traced bytes) a stream's run holds once *chunks* chunks were delivered,
    its source still open, after a full collection."""
    text = _sentences(chunks) + "And the rest of the story"
    deltas = [text[i : i + 4] for i in range(0, len(text), 4)]
    delivered = asyncio.Event()
    resume = asyncio.Event()

    async def source() -> AsyncIterator[str]:
        for delta in deltas:
            yield delta
        await resume.wait()

    class Backend:
        async def generate_from_context(self, action: Any, ctx: Any, **kwargs: Any) -> Any:
            thunk: Any = ModelOutputThunk(from_async_iterable(source), generation=GenerationInfo())
            return thunk, ctx.add(action).add(thunk)

    seen = [0]

    async def pipeline() -> None:
        result = await stream_with_chunking(
            CBlock("p"), Backend(), SimpleContext(), requirements=requirements
        )
        async for event in result.events():
            if isinstance(event, ChunkEvent):
                seen[0] += 1
                if seen[0] == chunks:
                    delivered.set()
        await result.acomplete()

    gc.collect()
    objects = len(gc.get_objects())
    tracemalloc.start()
    try:
        task = asyncio.create_task(pipeline())
        await asyncio.wait_for(delivered.wait(), 30)
        await asyncio.sleep(0)
        gc.collect()
        held = len(gc.get_objects()) - objects, tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        resume.set()
    await task
    return held


@pytest.mark.asyncio
async def test_a_run_keeps_two_objects_a_delivered_chunk_with_the_built_in_checks() -> None:
    def checks() -> list[Requirement]:
        return [MustNotMatch(r"\d{5}"), req("no opinion", lambda chunk: None), req("yes", lambda chunk: True)]

    await _kept_after(2, checks())  # first-time work (lazy imports, caches) outside the count
    few_objects, few_bytes = await _kept_after(5, checks())
    many_objects, many_bytes = await _kept_after(105, checks())
    per_chunk = (many_objects - few_objects) / 100
    assert per_chunk <= OBJECTS_PER_CHUNK_BUDGET, (
        f"a run keeps {per_chunk:.2f} tracked objects a delivered chunk (budget {OBJECTS_PER_CHUNK_BUDGET})"
    )
    bytes_per_chunk = (many_bytes - few_bytes) / 100
    assert bytes_per_chunk <= BYTES_PER_CHUNK_BUDGET, (
        f"a run keeps {bytes_per_chunk:.0f} traced bytes a delivered chunk of about 40 characters "
        f"(budget {BYTES_PER_CHUNK_BUDGET})"
    )
