"""Eager start of coroutines: decide in the caller's step when no await is needed.

A validator such as "at most 3 sentences" answers without ever suspending. Run as
an asyncio task it costs a task, two loop handles, and its answer arrives a loop
turn after the chunk, while the producer of the next delta may already have run.
:class:`Lane` instead runs a coroutine's first step synchronously, in the call that
starts it (as Python 3.12's eager tasks do, without needing 3.12): if the coroutine
finishes there, its result is available at once and no task was involved; if it
suspends, the lane's own task continues it from where it stopped.

A lane is one logical task: it runs one coroutine at a time, and while a coroutine's
first step runs, ``asyncio.current_task()`` is the lane's task (the one that will
continue it), so ``asyncio.timeout()``, ``TaskGroup`` and ``current_task()`` inside a
validator bind to the right task even though the step ran in the caller. The lane's
task is created on first use and ends with :meth:`Lane.close`.

The task switch uses ``asyncio.tasks._enter_task`` / ``_leave_task``, the hooks
asyncio's own eager tasks use (present since Python 3.7).
"""

from __future__ import annotations

import asyncio
import types
from asyncio import tasks as _tasks
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Final

__all__ = ["PENDING", "DeadlineExceeded", "Lane", "resume"]

PENDING: Final = object()
"""What :meth:`Lane.start` returns when the coroutine suspended and the lane continues it."""

_enter_task = _tasks._enter_task
_leave_task = _tasks._leave_task
# asyncio.current_task(loop) without its Python frame: Python 3.11's is a function around
# the C module's dict of current tasks (from 3.12 it is a C function itself).
_current_task: Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None] = (
    _tasks.current_task
    if isinstance(_tasks.current_task, types.BuiltinFunctionType)
    else _tasks._current_tasks.get  # type: ignore[attr-defined]
)

Done = Callable[["Lane", Any, BaseException | None], None]
"""Called as ``done(lane, result, None)`` or ``done(lane, None, exception)`` when a continued
coroutine ends."""


class DeadlineExceeded(TimeoutError):
    """A coroutine continued by a :class:`Lane` ran past the deadline it was started with."""


@types.coroutine
def resume(coro: Coroutine[Any, Any, Any], yielded: Any, cancel: bool = False) -> Generator[Any, Any, Any]:
    """Continue *coro*, which suspended by yielding *yielded*, inside the awaiting task
    (first cancelling it, with *cancel*).

    This is what ``await coro`` would do from that point on: pass each yielded
    future up to the task and send (or throw) what comes back into *coro*.
    """
    if cancel:
        try:
            # The class, not an instance: no local may hold the exception, or its
            # traceback (which holds this frame) would make a cycle.
            yielded = coro.throw(asyncio.CancelledError)
        except StopIteration as stop:
            return stop.value
    while True:
        try:
            sent = yield yielded
        except BaseException as exc:  # cancellation and GeneratorExit go to the coroutine
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return stop.value


def _ignore(lane: Lane, result: Any, error: BaseException | None) -> None:
    pass


class _Job:
    __slots__ = ("cancelled", "coro", "deadline", "yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any, deadline: float | None) -> None:
        self.coro = coro
        self.yielded = yielded
        self.deadline = deadline
        self.cancelled = False


class Lane:
    """Runs coroutines one at a time: each starts eagerly in the caller, continues in the lane's task."""

    __slots__ = ("_current", "_done", "_loop", "_own_cancels", "_pending", "_task", "_wakeup", "closed")

    def __init__(self, loop: asyncio.AbstractEventLoop, done: Done) -> None:
        self._loop = loop
        self._done = done
        self._task: asyncio.Task[None] | None = None
        self._pending: _Job | None = None  # handed over, not yet picked up by the task
        self._current: _Job | None = None  # being continued by the task
        self._wakeup: asyncio.Future[None] | None = None
        # True after close(), or once its task was cancelled by someone else (asyncio.run
        # shutting down): a closed lane starts nothing. An attribute, not a property: it is
        # read before every check a run starts.
        self.closed = False
        self._own_cancels = 0  # task.cancel() calls made by cancel(), not by someone else

    @property
    def busy(self) -> bool:
        """True while a coroutine started here has not finished."""
        return self._pending is not None or self._current is not None

    def start(self, coro: Coroutine[Any, Any, Any], *, deadline: float | None = None) -> Any:
        """Run *coro*'s first step now, with this lane's task as the current task.

        Returns the coroutine's result if it finished in that step (an exception it
        raised propagates), else :data:`PENDING`: the lane's task continues it, with
        *deadline* (a ``loop.time()``) as an ``asyncio.timeout_at``, and calls the
        lane's *done* when it ends (:class:`DeadlineExceeded` past the deadline,
        ``CancelledError`` after :meth:`cancel`). The lane must not be busy.
        """
        if self.closed:
            coro.close()
            raise RuntimeError("Lane.start() after close()")
        assert self._pending is None and self._current is None, "a lane runs one coroutine at a time"
        if self._task is None:
            self._task = self._loop.create_task(self._drive())
        task: asyncio.Task[None] = self._task
        loop = self._loop
        caller = _current_task(loop)
        if caller is not task:
            if caller is not None:
                _leave_task(loop, caller)
            _enter_task(loop, task)
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            return stop.value
        finally:
            if caller is not task:
                _leave_task(loop, task)
                if caller is not None:
                    _enter_task(loop, caller)
        self._pending = _Job(coro, yielded, deadline)
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)
        return PENDING

    def cancel(self) -> None:
        """Cancel the coroutine this lane is continuing (its *done* gets ``CancelledError``)."""
        job = self._pending
        if job is not None:  # handed over, not picked up yet: the task throws the cancellation in
            job.cancelled = True
            return
        job = self._current
        if job is not None and not job.cancelled:
            job.cancelled = True
            assert self._task is not None
            self._own_cancels += 1
            self._task.cancel()

    def close(self) -> None:
        """Cancel what runs here and end the lane's task (at its next step)."""
        if self.closed:
            return
        self.closed = True
        # Drop the owner's callback: a cancelled check's traceback (kept alive by
        # asyncio's own future/exception cycle) references this lane, and must not
        # keep the owner (a whole run) alive with it.
        self._done = _ignore
        job, self._pending = self._pending, None
        if job is not None:
            job.coro.close()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()

    async def _drive(self) -> None:
        while not self.closed:
            job = self._pending
            if job is None:
                self._wakeup = wakeup = self._loop.create_future()
                try:
                    await wakeup
                except asyncio.CancelledError:
                    if self.closed or self._cancelled_from_outside():
                        # The loop is shutting down (or someone cancelled this task): end. A job
                        # handed over meanwhile never ran on: its owner hears it was cancelled.
                        self.closed = True
                        job, self._pending = self._pending, None
                        if job is not None:
                            job.coro.close()
                            self._done(self, None, asyncio.CancelledError())
                        raise
                    self._uncancel()  # a cancel meant for a job that had already finished
                continue
            self._pending, self._current = None, job
            deadline = None
            try:
                if job.deadline is None:
                    result = await resume(job.coro, job.yielded, job.cancelled)
                else:
                    async with asyncio.timeout_at(job.deadline) as deadline:
                        result = await resume(job.coro, job.yielded, job.cancelled)
            except asyncio.CancelledError as exc:
                self._current = None
                if self.closed:
                    return
                outside = self._cancelled_from_outside()
                self._uncancel()
                if outside:  # closed before its owner hears of it: the owner must not reuse it
                    self.closed = True
                self._done(self, None, exc)
                if outside:
                    raise
            except Exception as exc:  # the coroutine's own error, or the deadline
                self._current = None
                expired = deadline is not None and deadline.expired()
                self._done(self, None, DeadlineExceeded() if expired else exc)
            else:
                self._current = None
                self._uncancel()  # it may have caught a cancellation and answered anyway
                self._done(self, result, None)

    def _cancelled_from_outside(self) -> bool:
        task = self._task
        return task is not None and task.cancelling() > self._own_cancels

    def _uncancel(self) -> None:
        """Withdraw the cancellations :meth:`cancel` made (never someone else's)."""
        task = self._task
        if task is not None:
            while self._own_cancels and task.cancelling():
                task.uncancel()
                self._own_cancels -= 1
        self._own_cancels = 0
