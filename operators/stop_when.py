"""The ``stop_when`` operator: end a pipeline on demand, as a cancellation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable

from engine.core.asyncrx import Downstream
from engine.core.thunk import GenerationCancelled

__all__ = ["stop_when"]

T = TypeVar("T")


def stop_when(signal: Observable[Any]) -> Callable[[Observable[T]], Observable[T]]:
    """Pass items through until *signal* emits; then stop at once.

    The source is disposed first (when it is a thunk's ``owned_deltas()`` the generation
    is cancelled in that very call, and validators in flight are cancelled), then the
    stream ends with :class:`~engine.core.thunk.GenerationCancelled`, which
    ``to_events`` turns into ``CompletedEvent(success=False)``: a cancel, not an error.
    """

    def operator(source: Observable[T]) -> Observable[T]:
        def subscribe(
            observer: abc.ObserverBase[T], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            out: Downstream[T] = Downstream(observer)

            def stop(_: Any) -> None:
                out.on_error(GenerationCancelled())

            trigger = signal.subscribe(out.guard(stop), out.on_error)
            out.upstream.disposable = source.subscribe(
                out.guard(out.on_next), out.on_error, out.on_completed, scheduler=scheduler
            )
            return CompositeDisposable(out.upstream, trigger)

        return Observable(subscribe)

    return operator
