"""The idle deadline of one response: the longest silence allowed before the headers and between frames.

``asyncio.timeout(...).reschedule(now + idle)`` on every frame would be exact, but each
call cancels a timer handle and pushes a new one on the loop's heap: about ten Python
calls per delta, a fifth of a streamed delta's own cost. :class:`IdleDeadline` is
exact too and costs one attribute store per frame: a frame stamps ``last``, and the one
timer, when it fires, re-arms itself at ``last + idle`` if a frame came since, or ends
the wait by cancelling the reading task, which ``async with`` turns into
:class:`TimeoutError` (as ``asyncio.timeout`` does).
"""

from __future__ import annotations

import asyncio
from types import TracebackType

__all__ = ["IdleDeadline"]

_CLOCK_SLACK = 0.001


class IdleDeadline:
    """``async with IdleDeadline(idle):`` raises :class:`TimeoutError` after *idle* seconds without news.

    *idle* ``None`` never expires. The silence counts from :meth:`arm` (the request is
    sent) and from each stamp of :attr:`last` (a frame arrived: ``deadline.last =
    loop.time()``). :meth:`disarm` suspends it (waiting between retries).
    """

    __slots__ = ("_cancelling", "_expired", "_handle", "_idle", "_loop", "_task", "last")

    def __init__(self, idle: float | None) -> None:
        self._idle = idle
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[object] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._cancelling = 0
        self._expired = False
        self.last = 0.0
        """When news last came (the loop's clock); the reader stamps it for every frame."""

    def arm(self) -> None:
        """Start counting the silence now (a request was sent)."""
        self.last = self._loop.time()
        if self._idle is not None and self._handle is None and not self._expired:
            self._handle = self._loop.call_at(self.last + self._idle, self._fire)

    def disarm(self) -> None:
        """Stop counting until the next :meth:`arm`."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def expired(self) -> bool:
        """True if the deadline passed and cancelled the reading task."""
        return self._expired

    def _fire(self) -> None:
        assert self._idle is not None
        due = self.last + self._idle
        # News came since this timer was set: wait from there. Within a millisecond counts as
        # due (a loop fires timers that early: asyncio within its clock resolution, uvloop's
        # clock counts milliseconds), or the timer would re-arm itself for nothing.
        if due - self._loop.time() > _CLOCK_SLACK:
            self._handle = self._loop.call_at(due, self._fire)
            return
        self._handle = None
        self._expired = True
        if self._task is not None:
            self._task.cancel()

    async def __aenter__(self) -> IdleDeadline:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("IdleDeadline must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.disarm()
        assert self._task is not None
        if self._expired and exc_type is asyncio.CancelledError and self._task.uncancel() <= self._cancelling:
            raise TimeoutError from exc
