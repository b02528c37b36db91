"""The two bridges between asyncio and reactivex, and the replay log behind thunks.

reactivex has no built-in bridge between async iterators and observables (RxPY
issue #422), and the engine needs both directions:

* :func:`from_async_iterable`: a cold observable; each subscription starts one task
  that reads a fresh iterator. Disposing cancels the task at once, and the task's
  ``finally`` closes the iterator, which is what closes an HTTP response.
* :func:`iterate`: a single-consumer async iterator over an observable. Leaving the
  ``async for`` (or closing the generator) disposes the subscription.

:class:`ReplayLog` is a replaying subject: one upstream, any number of subscribers,
each of which first receives everything recorded so far. reactivex's
``ReplaySubject`` would do, but it stamps every item with a ``datetime`` and keeps a
second copy of it; a thunk receives one item per token, so this one keeps only the
items and costs a list append per token.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Generic, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import Disposable

__all__ = ["ReplayLog", "from_async_iterable", "iterate"]

T = TypeVar("T")


def from_async_iterable(factory: Callable[[], AsyncIterator[T]]) -> Observable[T]:
    """A cold observable that reads ``factory()`` in one asyncio task per subscription.

    Subscribe from inside a running event loop. Items are pushed as the iterator
    yields them (no batching); an exception from the iterator becomes ``on_error``.
    Disposal cancels the reading task at once; its ``finally`` closes the iterator
    (``aclose()``), so ``async with`` blocks inside an async generator exit.
    """

    def subscribe(
        observer: abc.ObserverBase[T], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        disposed = False

        async def pump() -> None:
            iterator = factory()
            try:
                async for item in iterator:
                    observer.on_next(item)
                    # Disposal from inside on_next is legal: stop reading buffered data.
                    if disposed:
                        return
            except Exception as exc:  # the source failed: report it once
                if not disposed:
                    observer.on_error(exc)
                return
            finally:
                aclose = getattr(iterator, "aclose", None)
                if aclose is not None:
                    with contextlib.suppress(Exception):
                        await aclose()
            if not disposed:
                observer.on_completed()

        task = asyncio.get_running_loop().create_task(pump())

        def dispose() -> None:
            nonlocal disposed
            if disposed:
                return
            disposed = True
            # A task cannot usefully cancel itself from inside on_next: the pump
            # checks `disposed` after each item and returns through its finally.
            if asyncio.current_task() is not task:
                task.cancel()

        return Disposable(dispose)

    return Observable(subscribe)


async def iterate(source: Observable[T]) -> AsyncGenerator[T, None]:
    """Iterate over *source* from asyncio (single consumer).

    Items are buffered between reads; an ``on_error`` is raised after the items
    that came before it. Leaving the loop disposes the subscription; use
    ``contextlib.aclosing`` with ``break`` so that happens at once, not at GC.
    """
    loop = asyncio.get_running_loop()
    buffer: deque[T] = deque()
    waiter: asyncio.Future[None] | None = None
    finished = False
    error: BaseException | None = None

    def wake() -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_next(item: T) -> None:
        buffer.append(item)
        wake()

    def on_error(exc: Exception) -> None:
        nonlocal finished, error
        finished, error = True, exc
        wake()

    def on_completed() -> None:
        nonlocal finished
        finished = True
        wake()

    subscription = source.subscribe(on_next, on_error, on_completed)
    try:
        while True:
            while buffer:
                yield buffer.popleft()
            if finished:
                if error is not None:
                    raise error
                return
            waiter = loop.create_future()
            await waiter
            waiter = None
    finally:
        subscription.dispose()


class ReplayLog(Generic[T]):
    """Records a stream and replays it: late subscribers see everything, then follow live."""

    __slots__ = ("_error", "_finished", "_observers", "items", "observable")

    def __init__(self) -> None:
        self.items: list[T] = []
        self._observers: list[abc.ObserverBase[T]] = []
        self._finished = False
        self._error: Exception | None = None
        self.observable: Observable[T] = Observable(self._subscribe)

    @property
    def finished(self) -> bool:
        """True once the log was completed or failed."""
        return self._finished

    @property
    def error(self) -> Exception | None:
        """The exception the log failed with, if any."""
        return self._error

    def append(self, item: T) -> None:
        """Record *item* and push it to every live subscriber."""
        if self._finished:
            return
        self.items.append(item)
        # A copy: an observer may subscribe or dispose while being notified.
        for observer in tuple(self._observers):
            observer.on_next(item)

    def complete(self) -> None:
        """End the log normally (later appends are ignored)."""
        self._finish(None)

    def fail(self, error: Exception) -> None:
        """End the log with *error*."""
        self._finish(error)

    def _finish(self, error: Exception | None) -> None:
        if self._finished:
            return
        self._finished, self._error = True, error
        observers, self._observers = self._observers, []
        for observer in observers:
            if error is None:
                observer.on_completed()
            else:
                observer.on_error(error)

    def _subscribe(self, observer: abc.ObserverBase[T], scheduler: Any = None) -> abc.DisposableBase:
        # Index loop: an observer may cause appends while it is being replayed to.
        i = 0
        while i < len(self.items):
            observer.on_next(self.items[i])
            i += 1
        if self._finished:
            if self._error is None:
                observer.on_completed()
            else:
                observer.on_error(self._error)
            return Disposable()
        self._observers.append(observer)

        def dispose() -> None:
            with contextlib.suppress(ValueError):
                self._observers.remove(observer)

        return Disposable(dispose)
