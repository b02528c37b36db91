"""rxllm's side of every benchmark, and the plain-asyncio floors: requirements, runs, worker ops.

Uses only public names (``engine``, ``operators``, ``backends``), so the scripts keep
working while the library's internals change.

- :class:`NoOpRequirement`: ``stream_validate`` says "unknown", ``validate`` passes;
  what a cheap real check costs, minus the check.
- :class:`FailOnChunk`: fails chunk *n* and records, inside the validator, the
  ``perf_counter`` reading at which it returns "fail" (the verdict) and how many
  deltas the source had produced by then, in a :class:`_ops.Probe` shared by its copies.
  With ``await_once`` it suspends once (``await asyncio.sleep(0)``) on every chunk
  before answering, as a validator doing I/O would.
- :func:`run_ours`: one ``stream_with_chunking`` run on a fresh, shipped ``ScriptedBackend``
  (no subclass), every event consumed; returns the generation record the backend kept.
- :func:`run_floor`: the plain-asyncio throughput floor: the same chunking (our
  ``Chunker``), one loop turn per delta, each chunk's checks awaited inline, the final
  ``validate`` calls, the same event objects, no Rx.
- :func:`cancel_floor_task_cancel`: the cancel floor (see its docstring).
- ``OPS``: what ``_worker.py`` serves for the side-by-side scripts: ``cancel``, ``stream``
  and ``fanout`` built by ``_ops.engine_ops`` (as the Mellea adapter, ``_mellea``, builds
  its own), and the floors' ops (the throughput floor's and the cancel floor's).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from _ops import Probe, cancel_samples, engine_ops

from backends import ScriptedBackend
from engine import (
    CBlock,
    ChunkEvent,
    CompletedEvent,
    FullValidationEvent,
    GenerationInfo,
    PartialValidationResult,
    QuickCheckEvent,
    Requirement,
    SimpleContext,
    StreamEvent,
    StreamingDoneEvent,
    ValidationResult,
    stream_with_chunking,
)
from operators import Chunker, SentenceChunking

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


class FailOnChunk(NoOpRequirement):
    """Returns "fail" on chunk number *n* (1-based), recording the verdict time in *probe*."""

    def __init__(self, n: int, probe: Probe, *, await_once: bool = False) -> None:
        super().__init__("fails on purpose")
        self.n = n
        self.probe = probe
        self.await_once = await_once
        self._seen = 0

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        if self.await_once:
            await asyncio.sleep(0)
        self._seen += 1
        if self._seen == self.n:
            self.probe.verdict()
            return _FAIL
        return _UNKNOWN


async def run_ours(
    deltas: Sequence[str],
    requirements: Sequence[Requirement],
    *,
    delay: float = 0.0,
    probe: Probe | None = None,
    chunking: str = "sentence",
) -> tuple[GenerationInfo, int, bool]:
    """One full pipeline run over the shipped ``ScriptedBackend`` (the path users run: its producer's
    own ``finally`` sets ``cancelled_at``); returns ``(generation record, events consumed, completed)``."""
    backend = ScriptedBackend(deltas, delay=delay)
    if probe is not None:
        probe.find_record = lambda: backend.generations[-1]
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
    """The plain-asyncio floor: the fastest honest plain-asyncio code doing the pipeline's work.

    The same chunking (our ``Chunker``), one loop turn per delta, every requirement's
    ``stream_validate`` on every chunk and ``validate`` at the end, the same event objects;
    no Rx, and the checks awaited inline, one after another: no task and no ``gather`` per
    chunk (the pipeline starts checks without creating tasks too, so tasks would only slow
    the floor down). Returns the number of events produced (all kept in a list).
    """
    ctx = SimpleContext()
    chunker = Chunker(SentenceChunking())
    events: list[StreamEvent] = []
    received: list[str] = []

    async def check(chunks: list[Any]) -> None:
        for c in chunks:
            results = [await req.stream_validate(c.text, backend=None, ctx=ctx) for req in requirements]  # type: ignore[arg-type]
            events.append(QuickCheckEvent(chunk_index=c.chunk_index, passed=True, results=tuple(results)))
            events.append(ChunkEvent(text=c.text, chunk_index=c.chunk_index))

    async for delta in _produce(deltas, delay):
        received.append(delta)
        chunks = chunker.feed(delta)
        if chunks:
            await check(chunks)
    await check(chunker.flush())
    full_text = "".join(received)
    events.append(StreamingDoneEvent(full_text=full_text))
    finals = [await req.validate(None, ctx) for req in requirements]  # type: ignore[arg-type]
    events.append(FullValidationEvent(passed=all(finals), results=tuple(finals)))
    events.append(CompletedEvent(success=True, full_text=full_text))
    return len(events)


# -- cancel floors ------------------------------------------------------------------------


class _FloorCheck:
    """The cancel floor's check: the same chunk count, verdict reading and optional await."""

    def __init__(self, fail_on: int, await_once: bool) -> None:
        self.fail_on = fail_on
        self.await_once = await_once
        self.seen = 0
        self.verdict_at: float | None = None

    async def __call__(self, chunk: str) -> bool:
        """True when *chunk* fails."""
        if self.await_once:
            await asyncio.sleep(0)
        self.seen += 1
        if self.seen == self.fail_on:
            self.verdict_at = time.perf_counter()
            return True
        return False


class _FloorRecord:
    def __init__(self) -> None:
        self.sent = 0
        self.sent_at_verdict = 0
        self.finally_at: float | None = None


async def cancel_floor_task_cancel(
    deltas: Sequence[str], delay: float, fail_on: int, await_once: bool
) -> tuple[float, int]:
    """The cancel floor: the producer task is cancelled from another task.

    The producer task hands each delta to the consumer (a list and a future, the
    cheapest hand-over); the consumer (this coroutine) chunks and checks, and on "fail"
    calls ``producer.cancel()``; the producer's ``finally`` records the time.
    Returns ``(verdict -> finally in seconds, deltas after the verdict)``.
    """
    loop = asyncio.get_running_loop()
    record = _FloorRecord()
    check = _FloorCheck(fail_on, await_once)
    pending: list[str] = []
    wake: list[asyncio.Future[None]] = []
    finished = False

    async def producer() -> None:
        nonlocal finished
        try:
            for delta in deltas:
                await asyncio.sleep(delay)
                record.sent += 1
                pending.append(delta)
                if wake and not wake[0].done():
                    wake[0].set_result(None)
        finally:
            finished = True
            record.finally_at = time.perf_counter()
            if wake and not wake[0].done():
                wake[0].set_result(None)

    task = asyncio.create_task(producer())
    chunker = Chunker(SentenceChunking())
    try:
        while not (finished and not pending):
            if not pending:
                wake[:] = [loop.create_future()]
                await wake[0]
                continue
            delta = pending.pop(0)
            for piece in chunker.feed(delta):
                if await check(piece.text):
                    record.sent_at_verdict = record.sent
                    task.cancel()
                    break
            if check.verdict_at is not None:
                break
    finally:
        await asyncio.gather(task, return_exceptions=True)
    assert check.verdict_at is not None and record.finally_at is not None, "the floor never failed"
    return record.finally_at - check.verdict_at, record.sent - record.sent_at_verdict


# -- worker ops (cancel, stream and fanout as every engine serves them: _ops.engine_ops) ---------


async def op_cancel_floor_task_cancel(
    deltas: list[str], delay: float, fail_on: int, await_once: bool, runs: int
) -> dict[str, list[float]]:
    """The cancel floor, as the ``cancel`` op reports it."""
    return await cancel_samples(lambda: cancel_floor_task_cancel(deltas, delay, fail_on, await_once), runs)


async def op_stream_floor(deltas: list[str], runs: int) -> dict[str, Any]:
    """The ``stream`` op for the plain-asyncio floor."""
    reqs = [NoOpRequirement() for _ in range(3)]
    seconds: list[float] = []
    events = 0
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        events = await run_floor(deltas, reqs)
        seconds.append(time.perf_counter() - start)
    return {"seconds": seconds, "events": events}


OPS: dict[str, Callable[..., Any]] = {
    **engine_ops("rxllm", run_ours, NoOpRequirement, FailOnChunk),
    "cancel_floor_task_cancel": op_cancel_floor_task_cancel,
    "stream_floor": op_stream_floor,
}
