"""The ``cancel_on_fail`` operator."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable, SingleAssignmentDisposable

from operators.verdicts import ChunkVerdict, VerdictItem

__all__ = ["cancel_on_fail"]


def cancel_on_fail() -> Callable[[Observable[VerdictItem]], Observable[VerdictItem]]:
    """Pass verdicts until the first failing one; then stop the source, report it, and complete.

    A ``Retrying`` marker (from ``retry_on_fail``) is not a failing verdict: it passes.

    This is ``take_while(passed, inclusive=True)`` with the order changed for cancel
    latency: the upstream is disposed first, synchronously (so when the source is a
    thunk's owned delta stream the generation is cancelled in this very call), and
    the failing verdict and the completion go downstream on the next loop turn. By
    then the backend's task has already run its cancellation, instead of waiting
    behind the building and delivery of the final events (measured in
    ``benchmarks/cancel_latency.py``: about half the verdict-to-cancelled time).
    Must run on an asyncio loop.
    """

    def operator(source: Observable[VerdictItem]) -> Observable[VerdictItem]:
        def subscribe(
            observer: abc.ObserverBase[VerdictItem], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            upstream = SingleAssignmentDisposable()
            disposed = False

            def on_next(verdict: VerdictItem) -> None:
                if not isinstance(verdict, ChunkVerdict) or verdict.passed:
                    observer.on_next(verdict)
                    return
                upstream.dispose()
                asyncio.get_running_loop().call_soon(report, verdict)

            def report(verdict: ChunkVerdict) -> None:
                if disposed:
                    return
                try:
                    observer.on_next(verdict)
                except Exception as exc:  # a loop callback must not swallow it (RX_NOTES pitfall 2)
                    observer.on_error(exc)
                    return
                observer.on_completed()

            def dispose() -> None:
                nonlocal disposed
                disposed = True

            upstream.disposable = source.subscribe(
                on_next, observer.on_error, observer.on_completed, scheduler=scheduler
            )
            return CompositeDisposable(upstream, Disposable(dispose))

        return Observable(subscribe)

    return operator
