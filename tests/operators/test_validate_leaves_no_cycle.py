"""A finished validate run is freed by reference counting: nothing of it waits for the cyclic GC.

A run's parts refer to each other while it runs (its lanes call it back; its own-chunking
part calls it); disposing it breaks every such cycle, so a service running many streams
does not pile finished runs up between collections. Checked with the collector off.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from backends import ScriptedBackend
from engine import (
    Instruction,
    PartialValidationResult,
    Requirement,
    SimpleContext,
    StreamRetry,
    stream_with_chunking,
)
from operators.validation.own_chunking import OwnChunkingRun
from operators.validation.run import ValidationRun


class Forbids(Requirement):
    """Fails a piece containing *word* (none: passes everything); *chunking* its own, if given."""

    def __init__(self, word: str | None, chunking: str | None = None, suspends: bool = False) -> None:
        super().__init__(f"no {word}", chunking=chunking)
        self.word = word
        self.suspends = suspends

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        if self.suspends:
            await asyncio.sleep(0)
        if self.word is not None and self.word in chunk:
            return PartialValidationResult("fail", reason=f"{self.word} in {chunk!r}")
        return PartialValidationResult("pass")


DELTAS = ["Sky is blue. ", "Grass is ", "purple. ", "Sea is green. ", "The end"]


def _alive() -> int:
    return sum(isinstance(o, ValidationRun | OwnChunkingRun) for o in gc.get_objects())


async def _run(reqs: list[Requirement], retry: StreamRetry | None) -> None:
    backend = ScriptedBackend(DELTAS, continuations=[["Grass is green. The end."]])
    result = await stream_with_chunking(
        Instruction("Describe."), backend, SimpleContext(), requirements=reqs, retry=retry
    )
    async for _ in result.events():
        pass
    await result.acomplete()


@pytest.mark.parametrize(
    ("reqs", "retry"),
    [
        ([Forbids(None), Forbids(None, suspends=True)], None),
        ([Forbids("purple"), Forbids(None, suspends=True)], None),
        ([Forbids(None, "word"), Forbids(None)], None),
        ([Forbids("purple", "word"), Forbids(None, "paragraph", suspends=True)], None),
        ([Forbids("purple", "word"), Forbids(None)], StreamRetry(max_attempts=2)),
        ([Forbids("purple"), Forbids(None, "word", suspends=True)], StreamRetry(max_attempts=2)),
    ],
    ids=["plain", "plain-fails", "own", "own-fails", "own-retried", "plain-fails-own-retried"],
)
def test_a_finished_run_leaves_nothing_for_the_cyclic_collector(
    reqs: list[Requirement], retry: StreamRetry | None
) -> None:
    gc.collect()
    before = _alive()
    gc.disable()
    try:
        asyncio.run(_run(reqs, retry))
        left = _alive() - before
    finally:
        gc.enable()
    assert left == 0, f"{left} validate run object(s) kept alive by a reference cycle"
