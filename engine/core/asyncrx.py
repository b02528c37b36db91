"""The two bridges between asyncio and reactivex, and the replay log behind thunks.

reactivex has no built-in bridge between async iterators and observables (RxPY
issue #422), and the engine needs both directions:

* :func:`from_async_iterable`: a cold observable; each subscription starts one task
  that reads a fresh iterator. Disposing cancels the task at once, and the task's
  ``finally`` closes the iterator, which is what closes an HTTP response.
* :func:`iterate`: a single-consumer async iterator over an observable. Leaving the
  ``async for`` (or closing the generator) disposes the subscription.

No exception may vanish inside a callback (RX_NOTES pitfall 2: one raised in a task or
a loop callback is lost and the stream hangs). Every place here that calls an observer
catches what it raises: :class:`Downstream` is the rule every hand-written operator
follows, :class:`ReplayLog` isolates its subscribers from each other, and what nobody
can take goes to :func:`report_unhandled` (the loop's exception handler: logged).

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
from typing import Any, Generic, ParamSpec, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import Disposable, SingleAssignmentDisposable

__all__ = ["Downstream", "ReplayLog", "from_async_iterable", "iterate", "report_unhandled"]

T = TypeVar("T")
P = ParamSpec("P")


def report_unhandled(error: Exception, message: str) -> None:
    """Hand *error*, which no observer could take, to the running loop's exception handler.

    asyncio logs it (nothing is lost silently); without a running loop it is raised.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is None:
        raise error
    loop.call_exception_handler({"message": message, "exception": error})


class Downstream(Generic[T]):
    """The observer a hand-written operator emits to, behind the rule every operator follows.

    An exception raised while the operator handles a notification (its own code, or a
    stage below it raising out of ``on_next``) must end the stream, once, with
    ``on_error``, after the operator's upstream is disposed (so the generation stops
    first). Wrap the operator's callbacks with :meth:`guard`, emit with :meth:`on_next`,
    end with :meth:`on_completed` or :meth:`on_error`; set :attr:`upstream` to the
    subscription of the source and return it. Notifications after the end are ignored.
    An exception raised by the downstream's own terminal callback cannot be delivered
    to it any more: it goes to :func:`report_unhandled`.
    """

    __slots__ = ("_observer", "stopped", "upstream")

    def __init__(self, observer: abc.ObserverBase[T]) -> None:
        self._observer = observer
        self.upstream = SingleAssignmentDisposable()
        self.stopped = False

    def on_next(self, item: T) -> None:
        """Emit *item* (may raise what the downstream raises: call it inside a guarded callback)."""
        if not self.stopped:
            self._observer.on_next(item)

    def on_completed(self) -> None:
        """End the stream normally."""
        if self.stopped:
            return
        self.stopped = True
        try:
            self._observer.on_completed()
        except Exception as exc:
            report_unhandled(exc, "an observer raised in on_completed")

    def on_error(self, error: Exception) -> None:
        """Dispose the upstream, then end the stream with *error*."""
        if self.stopped:
            return
        self.stopped = True
        self.upstream.dispose()
        try:
            self._observer.on_error(error)
        except Exception as exc:
            if exc is not error:
                report_unhandled(exc, "an observer raised in on_error")

    def guard(
        self, callback: Callable[P, None], on_fault: Callable[[Exception], None] | None = None
    ) -> Callable[P, None]:
        """*callback*, with any exception it raises passed to *on_fault* (default :meth:`on_error`)."""
        fault = on_fault if on_fault is not None else self.on_error

        def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
            try:
                callback(*args, **kwargs)
            except Exception as exc:
                fault(exc)

        return guarded


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
            iterator: AsyncIterator[T] | None = None
            error: Exception | None = None
            try:
                iterator = factory()
                async for item in iterator:
                    observer.on_next(item)
                    # Disposal from inside on_next is legal: stop reading buffered data.
                    if disposed:
                        return
            except Exception as exc:  # the source (or the observer taking an item) failed
                error = exc
            finally:
                aclose = getattr(iterator, "aclose", None)
                if aclose is not None:
                    with contextlib.suppress(Exception):
                        await aclose()
            if disposed:
                return
            # Nothing may escape this task: an exception lost in it would hang every reader.
            try:
                if error is None:
                    observer.on_completed()
                else:
                    observer.on_error(error)
            except Exception as exc:
                if exc is not error:
                    report_unhandled(exc, "an observer of from_async_iterable raised while the source ended")

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
    """Records a stream and replays it: late subscribers see everything, then follow live.

    Subscribers are isolated from each other and from the recorder: one whose
    ``on_next`` raises is detached and receives that exception as its ``on_error`` (the
    chain it heads ends with it), the others go on, and the exception is also handed to
    *on_observer_error* if given (the owner decides whether it ends the recording). A
    subscriber whose terminal callback raises is reported (:func:`report_unhandled`).
    """

    __slots__ = ("_error", "_finished", "_observers", "_on_observer_error", "items", "observable")

    def __init__(self, on_observer_error: Callable[[Exception], None] | None = None) -> None:
        self.items: list[T] = []
        self._observers: list[abc.ObserverBase[T]] = []
        self._finished = False
        self._error: Exception | None = None
        self._on_observer_error = on_observer_error
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
        failures: list[tuple[abc.ObserverBase[T], Exception]] | None = None
        # A copy: an observer may subscribe or dispose while being notified.
        for observer in tuple(self._observers):
            try:
                observer.on_next(item)
            except Exception as exc:
                failures = [*(failures or ()), (observer, exc)]
        if failures:
            # After every observer has the item: what a failure causes comes after it, in order.
            for failed, error in failures:
                self._observer_failed(failed, error)

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
            try:
                if error is None:
                    observer.on_completed()
                else:
                    observer.on_error(error)
            except Exception as exc:
                if exc is not error:
                    report_unhandled(exc, "a subscriber raised when its stream ended")

    def _observer_failed(self, observer: abc.ObserverBase[T], error: Exception) -> None:
        with contextlib.suppress(ValueError):
            self._observers.remove(observer)
        try:
            observer.on_error(error)
        except Exception as exc:
            # A subscriber without on_error re-raises (reactivex's default): the owner's
            # handler, if any, takes that one; anything else is reported.
            if exc is not error or self._on_observer_error is None:
                report_unhandled(exc, "a subscriber raised in on_error")
        if self._on_observer_error is not None:
            self._on_observer_error(error)

    def _subscribe(self, observer: abc.ObserverBase[T], scheduler: Any = None) -> abc.DisposableBase:
        # Index loop: an observer may cause appends while it is being replayed to.
        i = 0
        while i < len(self.items):
            try:
                observer.on_next(self.items[i])
            except Exception as exc:
                self._observer_failed(observer, exc)
                return Disposable()
            i += 1
        if self._finished:
            try:
                if self._error is None:
                    observer.on_completed()
                else:
                    observer.on_error(self._error)
            except Exception as exc:
                if exc is not self._error:
                    report_unhandled(exc, "a subscriber raised when its stream ended")
            return Disposable()
        self._observers.append(observer)

        def dispose() -> None:
            with contextlib.suppress(ValueError):
                self._observers.remove(observer)

        return Disposable(dispose)
