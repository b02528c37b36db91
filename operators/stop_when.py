"""The ``stop_when`` operator: end a pipeline on demand, as a cancellation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from reactivex import Observable, abc

from engine.core.asyncrx import LoopObservable, Relay, observe
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
        return LoopObservable(lambda observer: _StopWhen(observer, signal).connect(source))

    return operator


class _StopWhen(Relay[T]):
    """The link: passes items; the signal ends it (it is also the signal's observer's owner)."""

    __slots__ = ("trigger",)

    def __init__(self, downstream: Any, signal: Observable[Any]) -> None:
        super().__init__(downstream)
        self.trigger: abc.DisposableBase | None = None
        trigger = observe(signal, _Signal(self))
        if self.stopped:  # the signal had already been given (a replaying signal)
            trigger.dispose()
        else:
            self.trigger = trigger

    def on_next(self, value: T) -> None:
        # Relay.on_next's rule written out (one frame an item, not two).
        if self.stopped:
            return
        try:
            self.downstream.on_next(value)
        except Exception as exc:
            self.end(exc)

    def dispose(self) -> None:
        trigger, self.trigger = self.trigger, None
        if trigger is not None:
            trigger.dispose()
        super().dispose()


class _Signal:
    """The signal's observer: its first item ends the link as a cancellation; its error ends it."""

    __slots__ = ("link",)

    def __init__(self, link: _StopWhen[Any]) -> None:
        self.link = link

    def on_next(self, _: Any) -> None:
        self.link.end(GenerationCancelled())

    def on_error(self, error: Exception) -> None:
        self.link.on_error(error)

    def on_completed(self) -> None:
        pass
