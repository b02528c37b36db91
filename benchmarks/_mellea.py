"""Mellea's side of the side-by-side runs, for Mellea 0.7.0 and 0.8.0 alike.

Imported only inside a Mellea virtualenv (``make bench`` builds one per version; two
versions cannot share an interpreter); the version installed there picks the few places
where the two differ, marked ``_V08``:

- the run: 0.7.0's ``stream_with_chunking`` (``events()`` consumed, then ``acomplete()``),
  or 0.8.0's ``stream()`` (``mellea.stdlib.streaming.stream``, the API that replaced it:
  ``async with await stream(..., as_events=True)``), both with sentence chunking and every
  ``StreamEvent`` consumed, as ours consumes ``events()``;
- the backend's feeder: Mellea's ``send_to_queue`` takes the thunk's queue in 0.7.0, the
  thunk itself in 0.8.0; both with its default per-chunk timer, as Mellea's shipped backends;
- the requirements' per-chunk hook: ``stream_validate`` in 0.7.0; ``_stream_validate`` in
  0.8.0, whose ``stream_validate`` is final (it re-chunks for requirements that carry their
  own ``chunking``; these carry none, so each stream chunk reaches ``_stream_validate`` as is).

:class:`ReplayBackend` is a real Mellea ``Backend`` subclass that pushes the same deltas
our ``ScriptedBackend`` does, down the same code path Mellea's own Ollama and OpenAI
backends use: ``_generate_from_context`` returns an uncomputed ``ModelOutputThunk`` whose
feeder task runs Mellea's ``send_to_queue`` over an async iterator of deltas (one loop
turn, ``asyncio.sleep(delay)``, per delta, as in ours). The feeder is wrapped in a
``try/finally`` that records, in the same task, when it was cancelled (0.8.0 cancels it
from ``Streamer._finalize`` through ``mot.aclose()`` -> ``cancel_generation()``), so
"verdict -> feeder task cancelled" is read exactly as our "verdict -> backend task
cancelled" is.

The requirements mirror ``_ours``: no-op ones, and one that fails chunk *n* and records
the verdict time inside the validator (optionally awaiting once per chunk). ``OPS`` is
built by ``_ops.engine_ops``, as ``_ours.OPS`` is: the same ops, arguments and results.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import AsyncIterator, Callable, Sequence
from importlib.metadata import version
from typing import Any

from _ops import Probe, engine_ops
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

MELLEA_VERSION = version("mellea")
ENGINE = f"mellea-{MELLEA_VERSION}"
"""The engine's name in the harness (``mellea-0.7.0``, ``mellea-0.8.0``)."""
_V08 = tuple(int(part) for part in MELLEA_VERSION.split(".")[:2]) >= (0, 8)

if _V08:
    from mellea.stdlib.streaming import stream
else:
    from mellea.stdlib.streaming import stream_with_chunking

_UNKNOWN = PartialValidationResult("unknown")
_FAIL = PartialValidationResult("fail", reason="benchmark verdict")


def _passed(ctx: Any) -> ValidationResult:
    return ValidationResult(True)


class Record:
    """What one generation did (the fields our ``GenerationInfo`` has)."""

    def __init__(self) -> None:
        self.started_at = time.perf_counter()
        self.deltas_sent = 0
        self.cancelled_at: float | None = None
        self.finished = False


class ReplayBackend(Backend):
    """Replays *deltas*, *delay* seconds apart, for every generation; keeps a :class:`Record` each
    and hands it to *probe*."""

    def __init__(self, deltas: Sequence[str], *, delay: float = 0.0, probe: Probe | None = None) -> None:
        self.deltas = list(deltas)
        self.delay = delay
        self._model_id = "replay"
        self._provider = "benchmark"
        self._probe = probe
        self.records: list[Record] = []

    async def _deltas(self, record: Record) -> AsyncIterator[str]:
        for delta in self.deltas:
            await asyncio.sleep(self.delay)
            record.deltas_sent += 1
            yield delta

    async def _feed(self, record: Record, mot: ModelOutputThunk[Any]) -> None:
        try:
            # Both versions keep send_to_queue's default per-chunk timer (an asyncio.timeout around
            # every chunk), as Mellea's own OpenAI, Ollama-compatible and watsonx backends do unless
            # the caller sets ModelOption.STREAM_TIMEOUT: the path Mellea's users run.
            await send_to_queue(self._deltas(record), mot if _V08 else mot._gen.queue)
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
        if self._probe is not None:
            self._probe.record = record
        mot: ModelOutputThunk[Any] = ModelOutputThunk(None)
        mot._gen.start = datetime.datetime.now()
        mot._call.context = []
        mot._call.action = action
        mot._call.model_options = dict(model_options or {})
        mot._gen.process = self._process
        mot._gen.post_process = self._post_process
        mot.generation.model = self._model_id
        mot.generation.provider = self._provider
        mot._gen.generate = asyncio.create_task(self._feed(record, mot))
        mot._gen.generate_type = GenerateType.ASYNC
        return mot, ctx.add(action).add(mot)

    async def _generate_from_raw(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        raise NotImplementedError("the benchmark backend only streams from a context")


_HOOK = "_stream_validate" if _V08 else "stream_validate"


def _per_chunk_hook(cls: type[Requirement]) -> type[Requirement]:
    """Install the class's ``chunk_verdict`` as Mellea's per-chunk hook itself (``_stream_validate``
    in 0.8.0, ``stream_validate`` in 0.7.0): no extra call per chunk, as ours has none."""
    setattr(cls, _HOOK, cls.__dict__["chunk_verdict"])
    return cls


@_per_chunk_hook
class NoOpRequirement(Requirement):
    """ "unknown" on every chunk; the final check passes without a model call."""

    def __init__(self) -> None:
        super().__init__("no-op", validation_fn=_passed)

    async def chunk_verdict(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        return _UNKNOWN


@_per_chunk_hook
class FailOnChunk(Requirement):
    """Returns "fail" on chunk *n* (1-based), recording the verdict time in *probe*."""

    def __init__(self, n: int, probe: Probe, *, await_once: bool = False) -> None:
        super().__init__("fails on purpose", validation_fn=_passed)
        self.n = n
        self.probe = probe
        self.await_once = await_once
        self._seen = 0

    async def chunk_verdict(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        if self.await_once:
            await asyncio.sleep(0)
        self._seen += 1
        if self._seen == self.n:
            self.probe.verdict()
            return _FAIL
        return _UNKNOWN


async def run_mellea(
    deltas: Sequence[str],
    requirements: Sequence[Requirement],
    *,
    delay: float = 0.0,
    probe: Probe | None = None,
    chunking: str = "sentence",
) -> tuple[Record, int, bool]:
    """One Mellea run, every event consumed: ``(record, events, completed)``."""
    backend = ReplayBackend(deltas, delay=delay, probe=probe)
    n_events = 0
    if _V08:
        async with await stream(
            CBlock("benchmark"),
            backend,
            SimpleContext(),
            chunking=chunking,
            requirements=list(requirements),
            as_events=True,
        ) as events:
            async for _event in events:
                n_events += 1
            completed = bool(events.completed_normally and not events.failed_early)
    else:
        result = await stream_with_chunking(
            CBlock("benchmark"), backend, SimpleContext(), requirements=list(requirements), chunking=chunking
        )
        async for _event in result.events():
            n_events += 1
        await result.acomplete()
        completed = bool(result.completed)
    return backend.records[-1], n_events, completed


OPS: dict[str, Callable[..., Any]] = engine_ops(ENGINE, run_mellea, NoOpRequirement, FailOnChunk)
