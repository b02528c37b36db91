"""The bridges between asyncio and reactivex, and the replay log behind thunks.

reactivex has no built-in bridge between async iterators and observables (its users have
asked for one since 2019), and the engine needs both directions:

* :func:`from_async_iterable`: a cold observable; each subscription starts one task
  that reads a fresh iterator. Disposing cancels the task at once, and the task's
  ``finally`` closes the iterator, which is what closes an HTTP response.
* :func:`iterate`: a single-consumer async iterator over an observable. Leaving the
  ``async for`` (or closing the generator) disposes the subscription.
* :func:`from_awaitable`: an observable that awaits a coroutine for its source, then
  follows it (a retry attempt's generation is started that way).

:class:`LoopObservable` is how the engine's own sources and operators are built: on one
asyncio loop, reactivex's thread-safety machinery (an ``AutoDetachObserver``, a
``SingleAssignmentDisposable`` and an ``RLock`` per operator per subscription, the
trampoline) buys nothing and costs memory per stream and calls on every disposal. It is a
real ``Observable`` (``pipe`` and any reactivex operator work on it); :func:`observe`
connects two of ours directly, and a link is its own subscription: one object a link.

No exception may vanish inside a callback (one raised in a task or a loop callback
is lost and the stream hangs). Every place here that calls an observer catches what it
raises: :class:`Relay` is the rule every operator follows, :class:`ReplayLog` isolates
its subscribers from each other, the pump of :func:`from_async_iterable` lets nothing
escape its task, and what nobody can take goes to :func:`report_unhandled` (the loop's
exception handler: logged).

:class:`ReplayLog` is a replaying subject: one upstream, any number of subscribers, each
first receiving everything recorded so far (reactivex's ``ReplaySubject`` stamps every item
with a ``datetime`` and keeps a second copy; a thunk receives one item per token, so this
one keeps only the items and costs a list append per token).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

from reactivex import Observable, abc

from engine.core.eager import resume

__all__ = [
    "LoopObservable",
    "Relay",
    "ReplayLog",
    "Subscription",
    "from_async_iterable",
    "from_awaitable",
    "iterate",
    "observe",
    "report_unhandled",
    "subscribe",
]

T = TypeVar("T")


def report_unhandled(error: Exception, message: str) -> None:
    """Hand *error*, which no observer could take, to the running loop's exception handler.

    asyncio logs it (nothing is lost silently); without a running loop it is raised.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise error from None
    loop.call_exception_handler({"message": message, "exception": error})


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
        # Not Observable.__init__: it makes an RLock per observable that nothing here uses
        # (a few reactivex operators lock their source: `lock` makes one on first use), and
        # no closure for reactivex's path (_subscribe_core below): three objects fewer each.
        self._direct = subscribe

    def _subscribe_core(
        self, observer: abc.ObserverBase[T], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        return self._direct(observer)

    @property
    def lock(self) -> threading.RLock:  # type: ignore[override]
        """The lock some reactivex operators take on their source, made on first use."""
        lock: threading.RLock | None = self.__dict__.get("_lock")
        if lock is None:
            lock = self.__dict__["_lock"] = threading.RLock()
        return lock


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


class Relay(abc.DisposableBase, Generic[T]):
    """One link of a pipeline: an observer of the source that forwards to one downstream observer.

    Subclasses override the hooks ``_next`` (and ``_completed`` or ``_error``); the
    public callbacks run them behind the rule every operator follows: an exception
    raised while a notification is handled (the hook's own code, or a stage below
    raising out of ``on_next``) disposes the upstream first (so the generation stops),
    then ends the stream downstream with ``on_error``, once. After the end nothing more
    is forwarded; an exception from the downstream's own terminal callback cannot be
    delivered any more and goes to :func:`report_unhandled`. Build the observable with
    ``LoopObservable(lambda o: MyRelay(o).connect(source))``; the relay is its own subscription.
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
        return self

    def on_next(self, value: Any) -> None:
        """Handle *value* (``_next``); a fault ends the stream with ``on_error``."""
        if self.stopped:
            return
        try:
            self._next(value)
        except Exception as exc:
            self.end(exc)

    def on_error(self, error: Exception) -> None:
        """Handle the source's error (``_error``)."""
        if self.stopped:
            return
        try:
            self._error(error)
        except Exception as exc:
            self.end(exc)

    def on_completed(self) -> None:
        """Handle the source's completion (``_completed``)."""
        if self.stopped:
            return
        try:
            self._completed()
        except Exception as exc:
            self.end(exc)

    def _next(self, value: Any) -> None:
        self.downstream.on_next(value)

    def _error(self, error: Exception) -> None:
        self.end(error)

    def _completed(self) -> None:
        self.end(None)

    def end(self, error: Exception | None) -> None:
        """End the stream: dispose the upstream, then complete (or fail with *error*) downstream, once."""
        if self.stopped:
            return
        self.dispose()
        try:
            if error is None:
                self.downstream.on_completed()
            else:
                self.downstream.on_error(error)
        except Exception as exc:
            if exc is not error:
                report_unhandled(exc, f"{type(self).__name__}: the downstream raised when the stream ended")

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

    return LoopObservable(lambda observer: _Pump(factory, observer))


class _Pump(abc.DisposableBase, Generic[T]):
    """One subscription of :func:`from_async_iterable`: the reading task and its disposal."""

    __slots__ = ("closing", "delivering", "disposed", "factory", "iterator", "observer", "task")

    def __init__(self, factory: Callable[[], AsyncIterator[T]], observer: Any) -> None:
        self.factory: Callable[[], AsyncIterator[T]] | None = factory
        self.observer: Any = observer
        self.iterator: AsyncIterator[T] | None = None
        self.closing: tuple[Any, Any] | None = None  # a close begun in on_next that suspended
        self.disposed = False
        self.delivering = False  # inside observer.on_next, on the pump's own step
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        factory, observer = self.factory, self.observer
        assert factory is not None
        self.factory = None
        error: Exception | None = None
        try:
            iterator = self.iterator = factory()
            async for item in iterator:
                self.delivering = True
                try:
                    observer.on_next(item)
                finally:
                    self.delivering = False
                # Disposed from inside on_next: dispose() already closed the source.
                if self.disposed:
                    return
        except Exception as exc:  # the source (or the observer taking an item) failed
            error = exc
        finally:
            self.observer = None  # a finished subscription holds nothing
            closing, self.closing = self.closing, None
            unclosed, self.iterator = self.iterator, None
            try:
                if closing is not None:  # a close that dispose() began and that suspended
                    await resume(*closing)
                elif unclosed is not None:
                    aclose = getattr(unclosed, "aclose", None)
                    if aclose is not None:
                        await aclose()
            except Exception:
                pass  # the iterator's own cleanup failed; the stream is over anyway
        if self.disposed:
            if error is not None:  # no observer is left to take it: it must not vanish
                report_unhandled(error, "from_async_iterable: an error after the subscription was disposed")
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

    def dispose(self) -> None:
        """Stop reading: at once if called from inside ``on_next``, else by cancelling the task."""
        if self.disposed:
            return
        self.disposed = True
        if self.delivering:
            self._close_in_step()
        else:
            self.task.cancel()

    def _close_in_step(self) -> None:
        """Disposed from inside ``on_next``, so in the pump's own task step, while the source
        is suspended at its ``yield``: close it right here, so its ``finally`` (the producer's
        cleanup, an HTTP response's close) runs before this call returns, not after the
        whole chain of callbacks unwinds. A cleanup that awaits is continued by the task."""
        iterator, self.iterator = self.iterator, None
        aclose = getattr(iterator, "aclose", None)
        if aclose is None:
            return
        try:
            closer = aclose().__await__()  # any awaitable: a coroutine, an athrow, a future
            yielded = closer.send(None)
        except StopIteration:
            return
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:
            # The iterator's own cleanup failed (or cancelled itself): the stream is over
            # anyway, and the caller (a cancel) must not be interrupted by it.
            return
        self.closing = (closer, yielded)


async def iterate(source: Observable[T]) -> AsyncGenerator[T, None]:
    """Iterate over *source* from asyncio (single consumer).

    Items are buffered between reads; an ``on_error`` is raised after the items
    that came before it. Leaving the loop disposes the subscription; use
    ``contextlib.aclosing`` with ``break`` so that happens at once, not at GC.
    """
    loop = asyncio.get_running_loop()
    inbox: _Inbox[T] = _Inbox()
    subscription = observe(source, inbox)
    try:
        while True:
            while inbox.buffer:
                ready, inbox.buffer = inbox.buffer, []
                for item in ready:
                    yield item
            if inbox.finished:
                if inbox.error is not None:
                    raise inbox.error
                return
            inbox.waiter = waiter = loop.create_future()
            await waiter
            inbox.waiter = None
    finally:
        subscription.dispose()


class _Inbox(Generic[T]):
    """:func:`iterate`'s observer and what it has not yielded yet (one object, not four closures)."""

    __slots__ = ("buffer", "error", "finished", "waiter")

    def __init__(self) -> None:
        self.buffer: list[T] = []  # swapped out whole when read (an empty deque costs 0.6 KiB)
        self.waiter: asyncio.Future[None] | None = None
        self.finished = False
        self.error: BaseException | None = None

    def on_next(self, item: T) -> None:
        self.buffer.append(item)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def on_completed(self, error: Exception | None = None) -> None:
        self.finished, self.error = True, error
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    on_error = on_completed


def from_awaitable(factory: Callable[[], Awaitable[Observable[T]]]) -> Observable[T]:
    """An observable that awaits ``factory()`` in a task, then follows the observable it returns.

    An exception from *factory* becomes ``on_error``; disposal cancels the task or
    disposes the inner subscription. (A retry attempt is one: its generation must be
    started, awaited, before its deltas can be followed.)
    """

    def subscribe_fn(observer: Any) -> abc.DisposableBase:
        inner: abc.DisposableBase | None = None
        disposed = False

        def fail(exc: Exception) -> None:
            if disposed:
                report_unhandled(exc, "an awaited source failed after its observable was disposed")
                return
            try:
                observer.on_error(exc)
            except Exception as downstream:
                if downstream is not exc:
                    report_unhandled(downstream, "an observer raised taking an awaited source's error")

        async def run() -> None:
            nonlocal inner
            try:
                source = await factory()
            except Exception as exc:
                fail(exc)
                return
            try:
                link = observe(source, observer)
            except Exception as exc:  # the attempt's pipeline could not be built
                fail(exc)
                return
            if disposed:  # disposed while subscribing (a source that answered at once): stop it too
                link.dispose()
            else:
                inner = link

        task = asyncio.get_running_loop().create_task(run())

        def dispose() -> None:
            nonlocal disposed
            disposed = True
            task.cancel()
            if inner is not None:
                inner.dispose()

        return Subscription(dispose)

    return LoopObservable(subscribe_fn)


class Items(Protocol[T]):
    """What a :class:`ReplayLog` keeps its items in: a ``list``, or a compact store of them."""

    def append(self, item: T, /) -> None: ...
    def __len__(self) -> int: ...
    def __getitem__(self, index: int, /) -> T: ...


class ReplayLog(Generic[T]):
    """Records a stream and replays it: late subscribers see everything, then follow live.

    Subscribers are isolated from each other and from the recorder: one whose
    ``on_next`` raises is detached and receives that exception as its ``on_error`` (the
    chain it heads ends with it), the others go on, and the exception is also handed to
    *on_observer_error* if given (the owner decides whether it ends the recording). A
    subscriber whose terminal callback raises is reported (:func:`report_unhandled`).
    """

    __slots__ = ("_error", "_finished", "_observers", "_on_observer_error", "items")

    def __init__(
        self, on_observer_error: Callable[[Exception], None] | None = None, *, items: Items[T] | None = None
    ) -> None:
        self.items: Items[T] = [] if items is None else items
        self._observers: list[Any] = []
        self._finished = False
        self._error: Exception | None = None
        self._on_observer_error = on_observer_error

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
        observers = self._observers
        if len(observers) == 1:  # the common case: one pipeline
            observer = observers[0]
            try:
                observer.on_next(item)
            except Exception as exc:
                self._observer_failed(observer, exc)
            return
        failures: list[tuple[Any, Exception]] | None = None
        # A copy: an observer may subscribe or dispose while being notified.
        for observer in tuple(observers):
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

    def _observer_failed(self, observer: Any, error: Exception) -> None:
        try:  # noqa: SIM105
            self._observers.remove(observer)
        except ValueError:
            pass
        try:
            observer.on_error(error)
        except Exception as exc:
            # A subscriber without on_error re-raises (reactivex's default): the owner's
            # handler, if any, takes that one; anything else is reported.
            if exc is not error or self._on_observer_error is None:
                report_unhandled(exc, "a subscriber raised in on_error")
        if self._on_observer_error is not None:
            self._on_observer_error(error)

    def attach(self, observer: Any) -> abc.DisposableBase:
        """Subscribe *observer* (what each subscription to ``observable`` does): replay, then follow."""
        # Index loop: an observer may cause appends while it is being replayed to.
        i = 0
        while i < len(self.items):
            try:
                observer.on_next(self.items[i])
            except Exception as exc:
                self._observer_failed(observer, exc)
                return Subscription()
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
            return Subscription()
        self._observers.append(observer)
        return _Attachment(self, observer)


class _Attachment(abc.DisposableBase):
    """A subscriber's place in a :class:`ReplayLog` (one object, not a closure): ``dispose()`` detaches it."""

    __slots__ = ("log", "observer")

    def __init__(self, log: ReplayLog[Any], observer: Any) -> None:
        self.log: ReplayLog[Any] | None = log
        self.observer = observer

    def dispose(self) -> None:
        log, self.log = self.log, None
        if log is not None and self.observer in log._observers:
            log._observers.remove(self.observer)
