"""Mellea 0.7.0's side of the side-by-side runs (imported only inside the Mellea virtualenv).

:class:`ReplayBackend` is a real Mellea ``Backend`` subclass that pushes the same
deltas our ``ScriptedBackend`` does, down the same code path Mellea's own Ollama
and OpenAI backends use: ``_generate_from_context`` returns an uncomputed
``ModelOutputThunk`` whose feeder task runs Mellea's ``send_to_queue`` over an async
iterator of deltas (here: one loop turn, ``asyncio.sleep(delay)``, per delta, as in
ours). The feeder is wrapped in a ``try/finally`` that records, in the same task,
when it was cancelled, so "verdict -> feeder task cancelled" is read exactly as our
"verdict -> backend task cancelled" is.

The requirements mirror ``_ours``: no-op ones, and one that fails chunk *n* and
records the verdict time inside the validator (optionally awaiting once per chunk).
``OPS`` serves the same worker ops as ``_ours.OPS`` (``cancel``, ``stream``, ``fanout``)
with the same arguments and results, through Mellea 0.7.0's ``stream_with_chunking``.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from mellea.core import (
    Backend,
    CBlock,
    GenerateType,
    ModelOutputThunk,
    PartialValidationResult,
    Requirement,
    ValidationResult,
)
from mellea.helpers.async_helpers import send_to_queue
from mellea.stdlib.context import SimpleContext
from mellea.stdlib.streaming import stream_with_chunking

_UNKNOWN = PartialValidationResult("unknown")
_FAIL = PartialValidationResult("fail", reason="benchmark verdict")


def _passed(ctx: Any) -> ValidationResult:
    return ValidationResult(True)


class Record:
    """What one Mellea generation did (the fields our ``GenerationInfo`` has)."""

    def __init__(self) -> None:
        self.started_at = time.perf_counter()
        self.deltas_sent = 0
        self.cancelled_at: float | None = None
        self.finished = False


class ReplayBackend(Backend):
    """Replays *deltas*, *delay* seconds apart, for every generation; keeps a :class:`Record` each."""

    def __init__(self, deltas: Sequence[str], *, delay: float = 0.0) -> None:
        self.deltas = list(deltas)
        self.delay = delay
        self._model_id = "replay"
        self._provider = "benchmark"
        self.records: list[Record] = []

    async def _deltas(self, record: Record) -> AsyncIterator[str]:
        for delta in self.deltas:
            await asyncio.sleep(self.delay)
            record.deltas_sent += 1
            yield delta

    async def _feed(self, record: Record, queue: asyncio.Queue[Any]) -> None:
        try:
            await send_to_queue(self._deltas(record), queue)
            record.finished = True
        finally:
            if not record.finished:
                record.cancelled_at = time.perf_counter()

    async def _process(self, mot: ModelOutputThunk[Any], chunk: Any) -> None:
        if mot._underlying_value is None:
            mot._underlying_value = ""
        mot._underlying_value += chunk

    async def _post_process(self, mot: ModelOutputThunk[Any]) -> None:
        return None

    async def _generate_from_context(  # type: ignore[override]
        self,
        action: Any,
        ctx: Any,
        *,
        format: Any = None,
        model_options: dict[str, Any] | None = None,
        tool_calls: bool = False,
    ) -> tuple[ModelOutputThunk[Any], Any]:
        record = Record()
        self.records.append(record)
        mot: ModelOutputThunk[Any] = ModelOutputThunk(None)
        mot._gen.start = datetime.datetime.now()
        mot._call.context = []
        mot._call.action = action
        mot._call.model_options = dict(model_options or {})
        mot._gen.process = self._process
        mot._gen.post_process = self._post_process
        mot.generation.model = self._model_id
        mot.generation.provider = self._provider
        mot._gen.generate = asyncio.create_task(self._feed(record, mot._gen.queue))
        mot._gen.generate_type = GenerateType.ASYNC
        return mot, ctx.add(action).add(mot)

    async def _generate_from_raw(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        raise NotImplementedError("the benchmark backend only streams from a context")


class NoOpRequirement(Requirement):
    """ "unknown" on every chunk; the final check passes without a model call."""

    def __init__(self) -> None:
        super().__init__("no-op", validation_fn=_passed)

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        return _UNKNOWN


class Probe:
    """Shared by a :class:`FailOnChunk` and its copies."""

    def __init__(self) -> None:
        self.record: Record | None = None
        self.verdict_at: float | None = None
        self.sent_at_verdict = 0


class FailOnChunk(Requirement):
    """Returns "fail" on chunk *n* (1-based), recording the verdict time in *probe*."""

    def __init__(self, n: int, probe: Probe, *, await_once: bool = False) -> None:
        super().__init__("fails on purpose", validation_fn=_passed)
        self.n = n
        self.probe = probe
        self.await_once = await_once
        self._seen = 0

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        if self.await_once:
            await asyncio.sleep(0)
        self._seen += 1
        if self._seen == self.n:
            probe = self.probe
            assert probe.record is not None
            probe.sent_at_verdict = probe.record.deltas_sent
            probe.verdict_at = time.perf_counter()
            return _FAIL
        return _UNKNOWN


class _ProbedBackend(ReplayBackend):
    def __init__(self, deltas: Sequence[str], *, delay: float, probe: Probe | None) -> None:
        super().__init__(deltas, delay=delay)
        self._probe = probe

    async def _generate_from_context(self, action: Any, ctx: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        result = await super()._generate_from_context(action, ctx, **kwargs)
        if self._probe is not None:
            self._probe.record = self.records[-1]
        return result


async def run_mellea(
    deltas: Sequence[str],
    requirements: Sequence[Requirement],
    *,
    delay: float = 0.0,
    probe: Probe | None = None,
    chunking: str = "sentence",
) -> tuple[Record, int, bool]:
    """One Mellea ``stream_with_chunking`` run, every event consumed: ``(record, events, completed)``."""
    backend = _ProbedBackend(deltas, delay=delay, probe=probe)
    result = await stream_with_chunking(
        CBlock("benchmark"), backend, SimpleContext(), requirements=list(requirements), chunking=chunking
    )
    n_events = 0
    async for _event in result.events():
        n_events += 1
    await result.acomplete()
    return backend.records[-1], n_events, bool(result.completed)


# -- worker ops (as _ours.OPS) ----------------------------------------------------------------


async def op_cancel(
    deltas: list[str], delay: float, fail_on: int, await_once: bool, runs: int
) -> dict[str, list[float]]:
    """*runs* failing streams: verdict -> the feeder's ``finally`` (µs), deltas after the verdict."""
    latency: list[float] = []
    after: list[float] = []
    for _ in range(runs):
        gc.collect()
        probe = Probe()
        reqs = [FailOnChunk(fail_on, probe, await_once=await_once), NoOpRequirement(), NoOpRequirement()]
        record, _, completed = await run_mellea(deltas, reqs, delay=delay, probe=probe)
        if completed or record.cancelled_at is None or probe.verdict_at is None:
            raise RuntimeError(
                "Mellea 0.7.0's failing run was not cancelled; the side-by-side is not comparable"
            )
        latency.append((record.cancelled_at - probe.verdict_at) * 1e6)
        after.append(record.deltas_sent - probe.sent_at_verdict)
    return {"latency_us": latency, "deltas_after": after}


async def op_stream(deltas: list[str], runs: int) -> dict[str, Any]:
    """*runs* timed passing streams of *deltas*, three no-op requirements, every event consumed."""
    reqs = [NoOpRequirement() for _ in range(3)]
    seconds: list[float] = []
    events = 0
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        _, events, completed = await run_mellea(deltas, reqs)
        seconds.append(time.perf_counter() - start)
        if not completed:
            raise RuntimeError("a passing Mellea 0.7.0 run did not complete")
    return {"seconds": seconds, "events": events}


async def op_fanout(deltas: list[str], streams: int) -> dict[str, Any]:
    """*streams* concurrent passing streams on one loop: wall seconds and failures."""
    reqs = [NoOpRequirement() for _ in range(3)]
    gc.collect()
    start = time.perf_counter()
    results = await asyncio.gather(
        *(run_mellea(deltas, reqs) for _ in range(streams)), return_exceptions=True
    )
    seconds = time.perf_counter() - start
    failures = sum(1 for r in results if isinstance(r, BaseException) or not r[2])
    return {"seconds": seconds, "failures": failures}


OPS: dict[str, Callable[..., Any]] = {"cancel": op_cancel, "stream": op_stream, "fanout": op_fanout}
