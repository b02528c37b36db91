"""The ``final_validation`` operator: the whole-output ``validate()`` after a natural end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from reactivex import Observable, abc
from reactivex.disposable import Disposable

from engine.core.asyncrx import Downstream
from engine.core.context import Context
from engine.core.requirements import Requirement, validate_all
from operators.verdicts import ChunkVerdict, FinalItem, FinalValidation, StreamingDone

__all__ = ["final_validation"]


def final_validation(
    requirements: Sequence[Requirement], *, backend: Any, ctx: Context
) -> Callable[[Observable[ChunkVerdict]], Observable[FinalItem]]:
    """Pass verdicts through; on a natural end with no failure, emit :class:`StreamingDone`
    and then run every requirement's ``validate(backend, ctx)`` in parallel and emit
    :class:`FinalValidation`.

    After a failing verdict the end passes straight through: no final validation. A
    ``validate()`` that raises cancels the others and becomes ``on_error``, as does a
    stage below raising while it takes an item.
    """
    reqs = tuple(requirements)

    def operator(source: Observable[ChunkVerdict]) -> Observable[FinalItem]:
        def subscribe(
            observer: abc.ObserverBase[FinalItem], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            out: Downstream[FinalItem] = Downstream(observer)
            failed = False
            task: asyncio.Task[None] | None = None

            def on_next(verdict: ChunkVerdict) -> None:
                nonlocal failed
                failed = failed or not verdict.passed
                out.on_next(verdict)

            def on_completed() -> None:
                nonlocal task
                if failed:
                    out.on_completed()
                    return
                out.on_next(StreamingDone())
                if not reqs:
                    out.on_completed()
                    return
                task = asyncio.get_running_loop().create_task(run())

            async def run() -> None:
                # Nothing may escape this task: an exception lost in it would hang the run.
                try:
                    results = await validate_all(reqs, backend, ctx)
                    out.on_next(FinalValidation(results))
                except Exception as exc:
                    out.on_error(exc)
                    return
                out.on_completed()

            def dispose() -> None:
                out.upstream.dispose()
                if task is not None and task is not asyncio.current_task():
                    task.cancel()

            out.upstream.disposable = source.subscribe(
                out.guard(on_next), out.on_error, out.guard(on_completed), scheduler=scheduler
            )
            return Disposable(dispose)

        return Observable(subscribe)

    return operator
