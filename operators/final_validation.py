"""The ``final_validation`` operator: the whole-output ``validate()`` after a natural end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from reactivex import Observable, abc
from reactivex.disposable import Disposable, SingleAssignmentDisposable

from engine.core.context import Context
from engine.core.requirements import Requirement, validate_all
from operators.verdicts import ChunkVerdict, FinalItem, FinalValidation, StreamingDone, VerdictItem

__all__ = ["final_validation"]


def final_validation(
    requirements: Sequence[Requirement], *, backend: Any, ctx: Context | Callable[[], Context]
) -> Callable[[Observable[VerdictItem]], Observable[FinalItem]]:
    """Pass verdicts through; on a natural end with no failure, emit :class:`StreamingDone`
    and then run every requirement's ``validate(backend, ctx)`` in parallel and emit
    :class:`FinalValidation`.

    After a failing verdict the end passes straight through: no final validation. A
    ``validate()`` that raises cancels the others and becomes ``on_error``. *ctx* may be
    a function returning the context, called when the final validation starts (a run
    with retries knows its whole output only then).
    """
    reqs = tuple(requirements)

    def operator(source: Observable[VerdictItem]) -> Observable[FinalItem]:
        def subscribe(
            observer: abc.ObserverBase[FinalItem], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            failed = False
            task: asyncio.Task[None] | None = None

            def on_next(verdict: VerdictItem) -> None:
                nonlocal failed
                failed = failed or (isinstance(verdict, ChunkVerdict) and not verdict.passed)
                observer.on_next(verdict)

            def on_completed() -> None:
                nonlocal task
                if failed:
                    observer.on_completed()
                    return
                observer.on_next(StreamingDone())
                if not reqs:
                    observer.on_completed()
                    return
                task = asyncio.get_running_loop().create_task(run())

            async def run() -> None:
                try:
                    results = await validate_all(reqs, backend, ctx() if callable(ctx) else ctx)
                except Exception as exc:
                    observer.on_error(exc)
                    return
                observer.on_next(FinalValidation(results))
                observer.on_completed()

            def dispose() -> None:
                upstream.dispose()
                if task is not None and task is not asyncio.current_task():
                    task.cancel()

            upstream = SingleAssignmentDisposable()
            upstream.disposable = source.subscribe(
                on_next, observer.on_error, on_completed, scheduler=scheduler
            )
            return Disposable(dispose)

        return Observable(subscribe)

    return operator
