"""The one way synchronous code runs the engine's coroutines: :class:`SyncRunner`.

Every sync twin of a session (``instruct``, ``chat``, ...) and every sync ``@generative``
call goes through ``Session.run``, which is a ``SyncRunner``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["SyncRunner", "in_running_loop"]

T = TypeVar("T")


def in_running_loop() -> bool:
    """True when the calling thread is running an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class SyncRunner:
    """Runs coroutines to completion for synchronous callers.

    From plain code a coroutine runs on a private event loop (an :class:`asyncio.Runner`)
    that is kept between calls, so what lives on it (an HTTP backend's connection pool)
    is reused. From inside a running event loop, whose own thread cannot wait on it, the
    coroutine runs on a fresh loop in a helper thread while the caller blocks until it is
    done, as Mellea does (the caller's loop is stalled meanwhile: in async code, await the
    async form instead).

    ``close()`` first awaits *before_close* (if given: closing a backend) on the private
    loop, then closes the loop. Closing twice is harmless; running after a close opens a
    new private loop.
    """

    def __init__(self, before_close: Callable[[], Awaitable[None]] | None = None) -> None:
        self._before_close = before_close
        self._runner: asyncio.Runner | None = None
        self._lock = threading.Lock()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run *coro* to completion and return its result (or raise its exception)."""
        if in_running_loop():
            return _in_helper_thread(lambda: self._run_on_fresh_loop(coro))
        with self._lock:
            runner = self._runner
            if runner is None:
                runner = self._runner = asyncio.Runner()
            return runner.run(coro)

    @property
    def started(self) -> bool:
        """Whether the private loop is open (a coroutine ran on it since the last close)."""
        return self._runner is not None

    def close(self) -> None:
        """Await *before_close* on the private loop, then close it. Safe to call at any time."""
        with self._lock:
            runner, self._runner = self._runner, None
        if runner is None:
            return
        if in_running_loop():
            _in_helper_thread(lambda: _close(runner, self._before_close))
        else:
            _close(runner, self._before_close)

    def _run_on_fresh_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        with asyncio.Runner() as runner:
            return runner.run(coro)


def _close(runner: asyncio.Runner, before_close: Callable[[], Awaitable[None]] | None) -> None:
    try:
        if before_close is not None:
            runner.run(_awaited(before_close))
    finally:
        runner.close()  # cancels what is left, finishes async generators, closes the loop


async def _awaited(make: Callable[[], Awaitable[None]]) -> None:
    await make()


def _in_helper_thread(work: Callable[[], T]) -> T:
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rxllm-sync") as pool:
        return pool.submit(work).result()
