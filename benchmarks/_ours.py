"""Our side of every benchmark: requirements, one run of ``stream_with_chunking``, and the floor.

- :class:`NoOpRequirement`: ``stream_validate`` says "unknown", ``validate`` passes;
  what a cheap real check costs, minus the check.
- :class:`FailOnChunk`: fails chunk *n* and records, inside the validator, the
  ``perf_counter`` reading at which it returns "fail" (the verdict) and how many
  deltas the source had produced by then, in a :class:`Probe` shared by its copies.
- :func:`run_ours`: one ``stream_with_chunking`` run on a fresh ``ScriptedBackend``,
  every event consumed; returns the generation record the backend kept.
- :func:`run_floor`: the plain-asyncio floor: the same chunking (our ``Chunker``), the
  same awaits (one loop turn per delta, the requirements of a chunk run as tasks in
  parallel, the final ``validate`` calls), the same event objects, no Rx.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from backends.scripted import ScriptedBackend
from engine.core.components import CBlock
from engine.core.context import SimpleContext
from engine.core.events import (
    ChunkEvent,
    CompletedEvent,
    FullValidationEvent,
    QuickCheckEvent,
    StreamEvent,
    StreamingDoneEvent,
)
from engine.core.requirements import PartialValidationResult, Requirement, ValidationResult
from engine.core.thunk import GenerationInfo
from engine.streaming import stream_with_chunking
from operators.chunker import Chunker
from operators.chunking import SentenceChunking

_UNKNOWN = PartialValidationResult("unknown")
_FAIL = PartialValidationResult("fail", reason="benchmark verdict")
_PASSED = ValidationResult(True)


class NoOpRequirement(Requirement):
    """A requirement that does no work: "unknown" on every chunk, passes the final check."""

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        return _UNKNOWN

    async def validate(
        self,
        backend: Any,
        ctx: Any,
        *,
        format: type | None = None,
        model_options: dict[str, Any] | None = None,
    ) -> ValidationResult:
        return _PASSED


class Probe:
    """Mutable record shared by a :class:`FailOnChunk` and its copies (``copy`` is shallow)."""

    def __init__(self) -> None:
        self.generation: Any = None
        """The backend's generation record; set by the runner once generation has started."""
        self.verdict_at: float | None = None
        self.sent_at_verdict = 0


class FailOnChunk(NoOpRequirement):
    """Returns "fail" on chunk number *n* (1-based), recording the verdict time in *probe*."""

    def __init__(self, n: int, probe: Probe) -> None:
        super().__init__("fails on purpose")
        self.n = n
        self.probe = probe
        self._seen = 0

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        self._seen += 1
        if self._seen == self.n:
            probe = self.probe
            probe.sent_at_verdict = probe.generation.deltas_sent
            probe.verdict_at = time.perf_counter()
            return _FAIL
        return _UNKNOWN


class _ProbedBackend(ScriptedBackend):
    """``ScriptedBackend`` that hands each new generation record to a probe."""

    def __init__(self, deltas: Sequence[str], *, delay: float, probe: Probe | None) -> None:
        super().__init__(deltas, delay=delay)
        self._probe = probe

    async def generate_from_context(self, action: Any, ctx: Any, **kwargs: Any) -> Any:
        result = await super().generate_from_context(action, ctx, **kwargs)
        if self._probe is not None:
            self._probe.generation = self.generations[-1]
        return result


async def run_ours(
    deltas: Sequence[str],
    requirements: Sequence[Requirement],
    *,
    delay: float = 0.0,
    probe: Probe | None = None,
    chunking: str = "sentence",
) -> tuple[GenerationInfo, int, bool]:
    """One full pipeline run; returns ``(generation record, events consumed, completed)``."""
    backend = _ProbedBackend(deltas, delay=delay, probe=probe)
    result = await stream_with_chunking(
        CBlock("benchmark"), backend, SimpleContext(), requirements=requirements, chunking=chunking
    )
    n_events = 0
    async for _event in result.events():
        n_events += 1
    await result.acomplete()
    return backend.generations[-1], n_events, result.completed


async def _produce(deltas: Sequence[str], delay: float) -> AsyncIterator[str]:
    for delta in deltas:
        await asyncio.sleep(delay)
        yield delta


async def run_floor(deltas: Sequence[str], requirements: Sequence[Requirement], *, delay: float = 0.0) -> int:
    """The plain-asyncio floor: same chunking, awaits and events as the pipeline, no Rx.

    Returns the number of events produced (all are consumed: appended to a list).
    """
    ctx = SimpleContext()
    chunker = Chunker(SentenceChunking())
    events: list[StreamEvent] = []
    received: list[str] = []

    async def check(chunks: list[Any]) -> None:
        for c in chunks:
            results = await asyncio.gather(
                *(req.stream_validate(c.text, backend=None, ctx=ctx) for req in requirements)  # type: ignore[arg-type]
            )
            events.append(QuickCheckEvent(chunk_index=c.index, passed=True, results=tuple(results)))
            events.append(ChunkEvent(text=c.text, chunk_index=c.index))

    async for delta in _produce(deltas, delay):
        received.append(delta)
        chunks = chunker.feed(delta)
        if chunks:
            await check(chunks)
    await check(chunker.flush())
    full_text = "".join(received)
    events.append(StreamingDoneEvent(full_text=full_text))
    finals = await asyncio.gather(*(req.validate(None, ctx) for req in requirements))  # type: ignore[arg-type]
    events.append(FullValidationEvent(passed=all(finals), results=tuple(finals)))
    events.append(CompletedEvent(success=True, full_text=full_text))
    return len(events)
