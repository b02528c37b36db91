"""The two bridges between asyncio and reactivex, and the replay log behind thunks.

reactivex has no built-in bridge between async iterators and observables (RxPY
issue #422), and the engine needs both directions:

* :func:`from_async_iterable`: a cold observable; each subscription starts one task
  that reads a fresh iterator. Disposing cancels the task at once, and the task's
  ``finally`` closes the iterator, which is what closes an HTTP response.
* :func:`iterate`: a single-consumer async iterator over an observable. Leaving the
  ``async for`` (or closing the generator) disposes the subscription.

:class:`LoopObservable` is how the engine's own sources and operators are built.
Everything runs on one asyncio loop, so reactivex's thread-safety machinery (an
``AutoDetachObserver``, a ``SingleAssignmentDisposable`` and an ``RLock`` per
operator per subscription, and the current-thread trampoline) buys nothing and
costs memory per stream and calls on every disposal. A ``LoopObservable`` is a
real ``Observable`` (``pipe``, ``reactivex.merge`` and any reactivex operator work on
it, through reactivex's own ``subscribe``), and :func:`subscribe` connects two of
ours directly: one plain observer and one :class:`Subscription` per link.

:class:`ReplayLog` is a replaying subject: one upstream, any number of subscribers,
each of which first receives everything recorded so far. reactivex's
``ReplaySubject`` would do, but it stamps every item with a ``datetime`` and keeps a
second copy of it; a thunk receives one item per token, so this one keeps only the
items and costs a list append per token.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Generic, TypeVar

from reactivex import Observable, abc

__all__ = [
    "LoopObservable",
    "Relay",
    "ReplayLog",
    "Subscription",
    "from_async_iterable",
    "iterate",
    "observe",
    "subscribe",
]

T = TypeVar("T")


class Subscription(abc.DisposableBase):
    """A disposable without a lock: runs *action* once, on the first ``dispose()``."""

    __slots__ = ("_action",)

    def __init__(self, action: Callable[[], None] | None = None) -> None:
        self._action = action

    def dispose(self) -> None:
        """Run the action (once)."""
        action, self._action = self._action, None
        if action is not None:
            action()


class _Callbacks:
    """A plain observer made of three callables (what :func:`subscribe` hands a source)."""

    __slots__ = ("on_completed", "on_error", "on_next")

    def __init__(
        self,
        on_next: Callable[[Any], None],
        on_error: Callable[[Exception], None],
        on_completed: Callable[[], None],
    ) -> None:
        self.on_next = on_next
        self.on_error = on_error
        self.on_completed = on_completed


SubscribeFn = Callable[[Any], abc.DisposableBase]
"""``(observer) -> subscription``; the observer has ``on_next``, ``on_error`` and ``on_completed``."""


class LoopObservable(Observable[T]):
    """An ``Observable`` for use on one asyncio loop, built from a subscribe function.

    reactivex's ``subscribe`` works on it as on any observable (with its usual
    wrappers); :func:`subscribe` skips them when the source is a ``LoopObservable``.
    The subscribe function must itself stop calling the observer after a terminal
    notification or a disposal (every one in this engine does).
    """

    def __init__(self, subscribe: SubscribeFn) -> None:
        def through_reactivex(
            observer: abc.ObserverBase[T], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            return subscribe(observer)

        super().__init__(through_reactivex)
        self._direct = subscribe


def observe(source: Observable[T], observer: Any) -> abc.DisposableBase:
    """Subscribe *observer* (an object with ``on_next``, ``on_error``, ``on_completed``) to
    *source*: directly if it is a :class:`LoopObservable`, else through reactivex."""
    if isinstance(source, LoopObservable):
        return source._direct(observer)
    return source.subscribe(observer)


def subscribe(
    source: Observable[T],
    on_next: Callable[[T], None],
    on_error: Callable[[Exception], None],
    on_completed: Callable[[], None],
) -> abc.DisposableBase:
    """Subscribe to *source*: directly if it is a :class:`LoopObservable`, else through reactivex."""
    if isinstance(source, LoopObservable):
        return source._direct(_Callbacks(on_next, on_error, on_completed))
    return source.subscribe(on_next, on_error, on_completed)


class Relay(Generic[T]):
    """One link of a pipeline: an observer of the source that forwards to one downstream observer.

    Subclasses override ``on_next`` (and ``on_completed`` or ``on_error``) and call
    :meth:`fail` when their own work raises: the upstream is disposed and the error
    goes downstream. After a terminal notification or a disposal nothing more is
    forwarded. Build the observable with ``LoopObservable(lambda o: MyRelay(o).connect(source))``.
    """

    __slots__ = ("downstream", "stopped", "upstream")

    def __init__(self, downstream: Any) -> None:
        self.downstream = downstream
        self.stopped = False
        self.upstream: abc.DisposableBase | None = None

    def connect(self, source: Observable[Any]) -> abc.DisposableBase:
        """Subscribe to *source*; return the subscription that disposes this link."""
        upstream = observe(source, self)
        if self.stopped:  # it ended while subscribing (a replaying source)
            upstream.dispose()
        else:
            self.upstream = upstream
        return Subscription(self.dispose)

    def on_next(self, value: Any) -> None:
        """Forward *value* (override to transform it)."""
        if not self.stopped:
            self.downstream.on_next(value)

    def on_error(self, error: Exception) -> None:
        """Forward the error and stop."""
        if not self.stopped:
            self.dispose()
            self.downstream.on_error(error)

    def on_completed(self) -> None:
        """Forward the completion and stop."""
        if not self.stopped:
            self.dispose()
            self.downstream.on_completed()

    def fail(self, error: Exception) -> None:
        """This link's own work failed: stop the upstream, send *error* downstream."""
        self.on_error(error)

    def dispose(self) -> None:
        """Stop forwarding and dispose the upstream subscription."""
        self.stopped = True
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.dispose()


def from_async_iterable(factory: Callable[[], AsyncIterator[T]]) -> Observable[T]:
    """A cold observable that reads ``factory()`` in one asyncio task per subscription.

    Subscribe from inside a running event loop. Items are pushed as the iterator
    yields them (no batching); an exception from the iterator becomes ``on_error``.
    Disposal cancels the reading task at once; its ``finally`` closes the iterator
    (``aclose()``), so ``async with`` blocks inside an async generator exit.
    """

    return LoopObservable(lambda observer: _Pump(factory(), observer))


class _Pump(abc.DisposableBase, Generic[T]):
    """One subscription of :func:`from_async_iterable`: the reading task and its disposal."""

    __slots__ = ("delivering", "disposed", "iterator", "observer", "task")

    def __init__(self, iterator: AsyncIterator[T], observer: Any) -> None:
        self.iterator: AsyncIterator[T] | None = iterator
        self.observer: Any = observer
        self.disposed = False
        self.delivering = False  # inside observer.on_next, on the pump's own step
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        iterator, observer = self.iterator, self.observer
        assert iterator is not None
        try:
            async for item in iterator:
                self.delivering = True
                try:
                    observer.on_next(item)
                finally:
                    self.delivering = False
                # Disposal from inside on_next is legal: stop reading buffered data.
                if self.disposed:
                    return
        except Exception as exc:  # the source failed: report it once
            if not self.disposed:
                observer.on_error(exc)
            return
        finally:
            self.iterator = self.observer = None  # a finished subscription holds nothing
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                try:  # noqa: SIM105 (suppress() costs calls on the cancel path)
                    await aclose()
                except Exception:
                    pass  # the iterator's own cleanup failed; the stream is over anyway
        if not self.disposed:
            observer.on_completed()

    def dispose(self) -> None:
        """Stop reading: at once if called from inside ``on_next``, else by cancelling the task."""
        if self.disposed:
            return
        self.disposed = True
        # Disposed from inside on_next (the pump's own step): the pump checks `disposed`
        # right after it and returns through its finally, at once.
        if not self.delivering:
            self.task.cancel()


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

    subscription = subscribe(source, on_next, on_error, on_completed)
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

    __slots__ = ("_error", "_finished", "_observers", "items")

    def __init__(self) -> None:
        self.items: list[T] = []
        self._observers: list[abc.ObserverBase[T]] = []
        self._finished = False
        self._error: Exception | None = None

    @property
    def observable(self) -> Observable[T]:
        """The log as an observable: each subscription replays what was recorded, then follows.

        Built on each access rather than kept, so the log and its observable hold no
        cycle: a finished log is freed by reference counting.
        """
        return LoopObservable(self.attach)

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

    def attach(self, observer: Any) -> abc.DisposableBase:
        """Subscribe *observer* (what each subscription to ``observable`` does): replay, then follow."""
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
            return Subscription()
        self._observers.append(observer)

        def dispose() -> None:
            try:  # noqa: SIM105 (suppress() costs calls on the cancel path)
                self._observers.remove(observer)
            except ValueError:
                pass

        return Subscription(dispose)
