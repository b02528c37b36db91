"""The ``stop_when`` operator: end a pipeline on demand, as a cancellation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from reactivex import Observable, abc

from engine.core.asyncrx import LoopObservable, Relay, Subscription, subscribe
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
        def subscribe_fn(observer: Any) -> abc.DisposableBase:
            relay: Relay[T] = Relay(observer)

            def stop(_: Any) -> None:
                relay.end(GenerationCancelled())

            trigger = subscribe(signal, stop, relay.on_error, lambda: None)
            link = relay.connect(source)

            def dispose() -> None:
                trigger.dispose()
                link.dispose()

            return Subscription(dispose)

        return LoopObservable(subscribe_fn)

    return operator
