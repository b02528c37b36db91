"""``ModelOutputThunk``: the output of one generation, computed or still streaming.

A thunk owns one subscription to its generation's delta observable (one upstream
request, never two) and records every delta in a :class:`~engine.core.asyncrx.ReplayLog`,
so ``thunk.deltas`` gives any late subscriber what already arrived, then the rest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

import attrs
from reactivex import Observable, abc

from engine.core.asyncrx import LoopObservable, ReplayLog, Subscription, subscribe

__all__ = ["GenerationInfo", "ModelOutputThunk", "wait_for_all_mots"]

T = TypeVar("T")


@attrs.define
class GenerationInfo:
    """What happened during one generation; filled in by the thunk and the backend as it runs.

    Times are ``time.perf_counter()`` readings, so differences are latencies.
    """

    model: str | None = None
    provider: str | None = None
    started_at: float = attrs.field(factory=time.perf_counter)
    first_delta_at: float | None = None
    """When the thunk received its first delta (time to first token = this - started_at)."""
    finished_at: float | None = None
    """When the thunk became computed (completed, failed or cancelled)."""
    cancel_requested_at: float | None = None
    """When ``cancel_generation()`` was called on an unfinished thunk."""
    cancelled_at: float | None = None
    """When the backend's producer saw the cancellation (set by the backend)."""
    connection_closed_at: float | None = None
    """When an HTTP backend closed the connection to the server (set by the backend)."""
    deltas_received: int = 0
    deltas_sent: int = 0
    """Deltas the backend's producer handed on (set by the backend)."""
    done_reason: str | None = None
    usage: dict[str, int] = attrs.field(factory=dict)
    extra: dict[str, Any] = attrs.field(factory=dict)

    @property
    def cancelled(self) -> bool:
        """True if the generation was cancelled before it finished."""
        return self.cancel_requested_at is not None


class ModelOutputThunk(Generic[T]):
    """The output of a generation: lazy (still streaming) or computed.

    Create it with a delta *source* (an observable of text deltas; the thunk
    subscribes at once, so generation starts now and must be on a running loop) or
    with a computed *value*. ``parsed_repr`` carries a typed form of the value
    (a ``Message`` for chat, a parsed object for generative functions).
    """

    def __init__(
        self,
        source: Observable[str] | None = None,
        *,
        value: str | None = None,
        generation: GenerationInfo | None = None,
        parsed_repr: T | None = None,
    ) -> None:
        if (source is None) == (value is None):
            raise TypeError(
                "ModelOutputThunk takes either a delta source or a computed value, not both or neither"
            )
        self.generation = generation if generation is not None else GenerationInfo()
        self.parsed_repr: T | None = parsed_repr
        self._log: ReplayLog[str] = ReplayLog()
        self._computed = False
        self._value: str | None = None  # joined on first read once computed
        self._read = 0  # deltas already returned by astream()
        self._changed: asyncio.Future[None] | None = None
        self._done: asyncio.Future[None] | None = None
        self._upstream: abc.DisposableBase | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        if value is not None:
            self._log.append(value)
            self._set_computed(None)
        else:
            assert source is not None
            self._loop = asyncio.get_running_loop()
            self._upstream = subscribe(source, self._on_delta, self._on_error, self._on_completed)

    # -- reading ---------------------------------------------------------------

    @property
    def deltas(self) -> Observable[str]:
        """Every delta of this generation: what already arrived, then the rest live."""
        return self._log.observable

    def owned_deltas(self) -> Observable[str]:
        """:attr:`deltas`, owning the generation: disposing a subscription cancels it.

        Whatever disposes the pipeline (a "fail" completing it early, an error, a
        consumer leaving) then stops the generation in the same call. The
        subscription is removed *before* the thunk is cancelled, so the pipeline
        never sees the cancel as a natural end (a chunker would flush on it).
        """
        log = self._log

        def subscribe_fn(observer: Any) -> abc.DisposableBase:
            subscription = log.attach(observer)

            def dispose() -> None:
                subscription.dispose()
                self.cancel()

            return Subscription(dispose)

        return LoopObservable(subscribe_fn)

    @property
    def value(self) -> str | None:
        """The output text once computed (after a cancel or an error: what arrived), else ``None``."""
        if not self._computed:
            return None
        if self._value is None:
            self._value = "".join(self._log.items)
        return self._value

    @property
    def text(self) -> str:
        """The text received so far, computed or not."""
        value = self.value
        return value if value is not None else "".join(self._log.items)

    @property
    def error(self) -> Exception | None:
        """The exception the generation failed with, if it did."""
        return self._log.error

    def is_computed(self) -> bool:
        """True once the generation has finished, failed or been cancelled."""
        return self._computed

    async def avalue(self) -> str:
        """Wait for the generation to finish and return the text; raises the generation's error."""
        if not self.is_computed():
            if self._done is None:
                self._done = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._done)
        if self._log.error is not None:
            raise self._log.error
        value = self.value
        assert value is not None
        return value

    async def astream(self) -> str:
        """Return the text not yet returned by earlier calls, waiting until there is some.

        The call that observes completion returns the remainder, so
        ``while not mot.is_computed(): print(await mot.astream(), end="")`` prints the
        text exactly once. On a computed thunk the first call returns everything and
        later calls return ``""``. Single reader only. Raises the generation's error
        once the text that arrived before it has been returned.
        """
        items = self._log.items
        if self._read == len(items) and not self.is_computed():
            if self._changed is None or self._changed.done():
                self._changed = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._changed)
        if self._read == len(items) and self._log.error is not None:
            raise self._log.error
        new = "".join(items[self._read :])
        self._read = len(items)
        return new

    # -- cancelling --------------------------------------------------------------

    def cancel(self, error: Exception | None = None) -> None:
        """Stop the generation now: dispose the upstream subscription (the backend's
        task is cancelled at once) and mark the thunk computed with what arrived.

        Subscribers to :attr:`deltas` see the end on the next loop turn: the producer
        (its ``finally``, an HTTP connection's close) goes first, and a pipeline that
        calls this from inside a delta's callback returns to the producer at once.
        """
        if self._computed:
            return
        self.generation.cancel_requested_at = time.perf_counter()
        upstream = self._upstream
        if upstream is not None:
            upstream.dispose()
        self._set_computed(error, notify_later=True)

    async def cancel_generation(self, error: Exception | None = None) -> None:
        """Async form of :meth:`cancel` (Mellea's name); yields once so the backend's
        task can run its cleanup before this returns."""
        self.cancel(error)
        await asyncio.sleep(0)

    # -- upstream ----------------------------------------------------------------

    def _on_delta(self, delta: str) -> None:
        generation = self.generation
        if generation.deltas_received == 0:
            generation.first_delta_at = time.perf_counter()
        generation.deltas_received += 1
        self._log.append(delta)
        changed = self._changed
        if changed is not None and not changed.done():
            changed.set_result(None)

    def _on_error(self, error: Exception) -> None:
        self._set_computed(error)

    def _on_completed(self) -> None:
        self._set_computed(None)

    def _set_computed(self, error: Exception | None, *, notify_later: bool = False) -> None:
        if self._computed:
            return
        # Computed first, then notify: subscribers that see completion read a final value.
        self._computed = True
        if notify_later and self._loop is not None:
            self._loop.call_soon(self._notify, error)
            return
        self._notify(error)

    def _notify(self, error: Exception | None) -> None:
        self.generation.finished_at = time.perf_counter()
        self._upstream = None  # it holds this thunk's callbacks: drop the cycle
        if error is None:
            self._log.complete()
        else:
            self._log.fail(error)
        for future in (self._changed, self._done):
            if future is not None and not future.done():
                future.set_result(None)

    def __str__(self) -> str:
        # str() of a thunk still generating is the text so far; it never blocks.
        return self.text

    def __repr__(self) -> str:
        state = "computed" if self.is_computed() else "streaming"
        return f"ModelOutputThunk({state}, {len(self.text)} chars, model={self.generation.model!r})"


async def wait_for_all_mots(thunks: Iterable[ModelOutputThunk[Any]]) -> list[str]:
    """Resolve every thunk concurrently and return their values in order.

    All thunks must belong to the running event loop. The first error is raised
    after every thunk has finished.
    """
    return list(await asyncio.gather(*(t.avalue() for t in thunks)))
