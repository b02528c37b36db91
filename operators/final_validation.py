"""The ``final_validation`` operator: the whole-output ``validate()`` after a natural end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from reactivex import Observable

from engine.core import arguments
from engine.core.asyncrx import LoopObservable, Relay
from engine.core.context import Context
from engine.core.requirements import Requirement, validate_all
from operators.verdicts import ChunkVerdict, FinalItem, FinalValidation, StreamingDone, VerdictItem

__all__ = ["final_validation"]


def final_validation(
    requirements: Sequence[Requirement],
    *,
    backend: Any,
    ctx: Context | Callable[[], Context],
    timeout: float | None = None,
) -> Callable[[Observable[VerdictItem]], Observable[FinalItem]]:
    """Pass verdicts through; on a natural end with no failure, emit :class:`StreamingDone`
    and then run every requirement's ``validate(backend, ctx)`` in parallel and emit
    :class:`FinalValidation`.

    After a failing verdict the end passes straight through: no final validation. A
    ``validate()`` that raises cancels the others and becomes ``on_error``. *timeout*
    is the deadline of every ``validate()`` whose requirement sets none. *ctx* may be
    a function returning the context, called when the final validation starts (a run
    with retries knows its whole output only then).
    """
    arguments.positive_seconds("timeout", timeout)  # before anything starts: a deadline always computes
    reqs = tuple(requirements)

    def operator(source: Observable[VerdictItem]) -> Observable[FinalItem]:
        return LoopObservable(lambda observer: _Final(observer, reqs, backend, ctx, timeout).connect(source))

    return operator


class _Final(Relay[FinalItem]):
    __slots__ = ("backend", "ctx", "failed", "reqs", "task", "timeout")

    def __init__(
        self,
        downstream: Any,
        reqs: tuple[Requirement, ...],
        backend: Any,
        ctx: Context | Callable[[], Context],
        timeout: float | None,
    ) -> None:
        super().__init__(downstream)
        self.reqs = reqs
        self.backend = backend
        self.ctx = ctx
        self.timeout = timeout
        self.failed = False
        self.task: asyncio.Task[None] | None = None

    def on_next(self, value: VerdictItem) -> None:
        # Relay.on_next's rule written out (one frame a chunk, not two).
        if self.stopped:
            return
        try:
            self.failed = self.failed or (isinstance(value, ChunkVerdict) and not value.passed)
            self.downstream.on_next(value)
        except Exception as exc:
            self.end(exc)

    def _completed(self) -> None:
        if self.failed:
            self.end(None)
            return
        self.downstream.on_next(StreamingDone())
        if not self.reqs:
            self.end(None)
            return
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        # Nothing may escape this task: an exception lost in it would hang the run.
        try:
            ctx = self.ctx() if callable(self.ctx) else self.ctx
            results = await validate_all(self.reqs, self.backend, ctx, validation_timeout=self.timeout)
            if self.stopped:
                return
            self.downstream.on_next(FinalValidation(results))
        except Exception as exc:
            self.end(exc)
            return
        self.end(None)

    def dispose(self) -> None:
        super().dispose()
        task, self.task = self.task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
