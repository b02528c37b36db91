"""``ModelOutputThunk``: the output of one generation, computed or still streaming.

A thunk owns one subscription to its generation's delta observable (one upstream
request, never two) and records every delta in a :class:`~engine.core.asyncrx.ReplayLog`,
so ``thunk.deltas`` gives any late subscriber what already arrived, then the rest.

How a generation ends decides the thunk's state (as in Mellea):

* it completes: the thunk is *computed*, ``value`` is the text;
* it is cancelled (``cancel()``, or a pipeline owning it is disposed): the thunk is
  *computed* with what arrived;
* it fails (the backend raises, or hands over a delta that is not a ``str``): the thunk
  is *not* computed; ``text`` keeps what arrived and ``error`` the exception, which
  ``avalue()`` raises, and ``astream()`` too once the text before it has been returned.
"""

from __future__ import annotations

import asyncio
import logging
import reprlib
import time
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from reactivex import Observable, abc

from engine.core import telemetry
from engine.core.asyncrx import LoopObservable, ReplayLog, observe
from engine.core.delta_store import DeltaStore
from engine.core.generation import GenerationInfo

__all__ = ["GenerationCancelled", "ModelOutputThunk", "wait_for_all_mots"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class GenerationCancelled(Exception):
    """How a thunk's delta stream ends when its generation is cancelled: not a failure.

    Subscribers of :attr:`ModelOutputThunk.deltas` receive it as ``on_error`` so that a
    cancel is never mistaken for a natural end (a chunker would flush on that, a
    pipeline would run its final validation). A pipeline that cancels the generation by
    disposing its own subscription (``owned_deltas()``) never sees it. ``reason`` is the
    exception given to ``cancel()``, if any.
    """

    def __init__(self, reason: Exception | None = None) -> None:
        super().__init__("the generation was cancelled" + (f" ({reason})" if reason is not None else ""))
        self.reason = reason


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
        self._deltas = DeltaStore()  # compact: a long answer's deltas are most of a stream's memory
        self._log: ReplayLog[str] = ReplayLog(items=self._deltas)
        self._ended = False  # completed, cancelled or failed (the log may hear of it a turn later)
        self._text: str | None = None  # joined on first read once ended
        self._error: Exception | None = None  # set when the generation failed
        self._read = 0  # deltas already returned by astream()
        self._changed: asyncio.Future[None] | None = None
        self._done: asyncio.Future[None] | None = None
        self._upstream: abc.DisposableBase | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._telemetry: object | None = None  # the generation's trace record, when telemetry is on
        if value is not None:
            self._log.append(value)
            self._finish(None)
        else:
            assert source is not None
            self._loop = asyncio.get_running_loop()
            if telemetry.active:
                self._telemetry = telemetry.generation_started(self.generation)
            upstream = observe(source, _Source(self))
            if self._ended:  # it ended while subscribing (a bad first delta)
                upstream.dispose()
            else:
                self._upstream = upstream

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
        return LoopObservable(lambda observer: _Owned(self._log.attach(observer), self))

    @property
    def value(self) -> str | None:
        """The output text once computed (after a cancel: what arrived), else ``None``.

        A failed generation is not computed: its value stays ``None`` (see :attr:`text`).
        """
        return self.text if self._ended and self._error is None else None

    @property
    def text(self) -> str:
        """The text received so far, whatever the state (after a failure: what arrived before it)."""
        if self._text is not None:
            return self._text
        text = self._deltas.text()
        if self._ended:
            self._text = text
        return text

    @property
    def error(self) -> Exception | None:
        """The exception the generation failed with, if it did (a cancel is not a failure)."""
        return self._error

    def is_computed(self) -> bool:
        """True once the generation has completed or been cancelled; False while it runs and
        after it failed (as in Mellea)."""
        return self._ended and self._error is None

    async def avalue(self) -> str:
        """Wait for the generation to end and return the text; raises the generation's error."""
        if not self._ended:
            if self._done is None:
                self._done = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._done)
        if self._error is not None:
            raise self._error
        return self.text

    async def astream(self) -> str:
        """Return the text not yet returned by earlier calls, waiting until there is some.

        The call that observes completion returns the remainder, so
        ``while not mot.is_computed(): print(await mot.astream(), end="")`` prints the
        text exactly once. On a computed thunk the first call returns everything and
        later calls return ``""``. Single reader only. After a failure it returns what
        arrived before the error (possibly over several calls), then raises the error,
        on that call and every later one, so that loop ends by raising it.
        """
        deltas = self._deltas
        if self._read == len(deltas) and not self._ended:
            if self._changed is None or self._changed.done():
                self._changed = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._changed)
        if self._read == len(deltas) and self._error is not None:
            raise self._error
        new = deltas.text_from(self._read)
        self._read = len(deltas)
        return new

    # -- cancelling --------------------------------------------------------------

    def cancel(self, error: Exception | None = None) -> None:
        """Stop the generation now: dispose the upstream subscription (the backend's
        task is cancelled at once) and mark the thunk computed with what arrived.

        Subscribers of :attr:`deltas` receive :class:`GenerationCancelled` (carrying
        *error*, the reason, if given) on the next loop turn: the producer (its
        ``finally``, an HTTP connection's close) goes first, and a pipeline that calls
        this from inside a delta's callback returns to the producer at once. No-op once
        the generation has ended.
        """
        if self._ended:
            return
        self.generation.cancel_requested_at = time.perf_counter()
        upstream = self._upstream
        if upstream is not None:
            upstream.dispose()
        self._finish(None, cancelled=GenerationCancelled(error), later=True)

    async def cancel_generation(self, error: Exception | None = None) -> None:
        """Async form of :meth:`cancel` (Mellea's name); yields once so the backend's
        task can run its cleanup before this returns."""
        self.cancel(error)
        await asyncio.sleep(0)

    # -- upstream ----------------------------------------------------------------

    def _reject(self, delta: object) -> None:
        """A delta that is not text fails the generation (it would break every reader)."""
        generation = self.generation
        backend = f"the backend {generation.provider!r}" if generation.provider else "the backend"
        model = f" (model {generation.model!r})" if generation.model else ""
        error = TypeError(
            f"{backend}{model} handed its ModelOutputThunk a delta of type {type(delta).__name__} "
            f"({reprlib.repr(delta)}) after {generation.deltas_received} text deltas; deltas must be str. "
            "Fix the backend's generate_from_context: decode bytes, take the text out of a dict or "
            "object, and skip None instead of passing it on."
        )
        if self._upstream is not None:  # None while subscribing: __init__ disposes it then
            self._upstream.dispose()
        self._finish(error)

    def _finish(
        self, error: Exception | None, *, cancelled: GenerationCancelled | None = None, later: bool = False
    ) -> None:
        if self._ended:
            return
        # State first, then notify: subscribers that see the end read the final state.
        self._ended = True
        self._error = error
        self._upstream = None  # it holds this thunk's callbacks: drop the cycle
        if later and self._loop is not None:
            self._loop.call_soon(self._notify, error, cancelled)
        else:
            self._notify(error, cancelled)

    def _notify(self, error: Exception | None, cancelled: GenerationCancelled | None) -> None:
        self.generation.finished_at = time.perf_counter()
        if error is not None:
            self._log.fail(error)
        elif cancelled is not None:
            _log_cancel(self.generation)
            self._log.fail(cancelled)
        else:
            self._log.complete()
        for future in (self._changed, self._done):
            if future is not None and not future.done():
                future.set_result(None)
        if self._telemetry is not None:
            telemetry.generation_ended(self._telemetry, self.generation, error, cancelled is not None)

    def __str__(self) -> str:
        # str() of a thunk still generating is the text so far; it never blocks.
        return self.text

    def __repr__(self) -> str:
        state = "computed" if self.is_computed() else "failed" if self._error is not None else "streaming"
        return f"ModelOutputThunk({state}, {len(self.text)} chars, model={self.generation.model!r})"


class _Owned(abc.DisposableBase):
    """A subscription of :meth:`ModelOutputThunk.owned_deltas`: disposing it (once) detaches
    the subscriber, then cancels the generation."""

    __slots__ = ("_attachment", "_thunk")

    def __init__(self, attachment: abc.DisposableBase, thunk: ModelOutputThunk[Any]) -> None:
        self._attachment = attachment
        self._thunk: ModelOutputThunk[Any] | None = thunk

    def dispose(self) -> None:
        """Detach, then cancel the generation (once)."""
        thunk, self._thunk = self._thunk, None
        if thunk is not None:
            self._attachment.dispose()
            thunk.cancel()


def _log_cancel(generation: GenerationInfo) -> None:
    """``rxllm stream --verbose``: the cancel, and when the producer and its connection stopped."""
    if not logger.isEnabledFor(logging.DEBUG):
        return
    asked = generation.cancel_requested_at
    stops = [
        f"{what} {(at - asked) * 1e6:.0f} us after the cancel"
        for what, at in (
            ("connection closed", generation.connection_closed_at),
            ("producer stopped", generation.cancelled_at),
        )
        if at is not None and asked is not None
    ]
    logger.debug(
        "cancelled the generation of %s (model %s) after %d deltas%s",
        generation.provider or "the backend",
        generation.model,
        generation.deltas_received,
        "; " + ", ".join(stops) if stops else "",
    )


async def wait_for_all_mots(thunks: Iterable[ModelOutputThunk[Any]]) -> list[str]:
    """Resolve every thunk concurrently and return their values in order.

    All thunks must belong to the running event loop. If some generations failed, the
    error of the first of them (in order) is raised after every thunk has ended.
    """
    outcomes = await asyncio.gather(*(t.avalue() for t in thunks), return_exceptions=True)
    values: list[str] = []
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
        values.append(outcome)
    return values


class _Source:
    """A thunk's observer of its source: one object (not three bound methods in a holder), kept
    by the source for the generation's life. ``on_next`` is the per-delta path: one frame."""

    __slots__ = ("thunk",)

    def __init__(self, thunk: ModelOutputThunk[Any]) -> None:
        self.thunk = thunk

    def on_next(self, delta: str) -> None:
        thunk = self.thunk
        if thunk._ended:
            return
        if not isinstance(delta, str):
            thunk._reject(delta)
            return
        generation = thunk.generation
        if generation.deltas_received == 0:
            generation.first_delta_at = time.perf_counter()
        generation.deltas_received += 1
        log = thunk._log
        observers = log._observers
        if len(observers) == 1:
            # One subscriber (a pipeline): ReplayLog.append's own fast path, written out here
            # (every delta passes here: one frame, not two). The log cannot have ended yet.
            log.items.append(delta)
            observer = observers[0]
            try:
                observer.on_next(delta)
            except Exception as exc:
                log._observer_failed(observer, exc)
        else:
            log.append(delta)
        changed = thunk._changed
        if changed is not None and not changed.done():
            changed.set_result(None)

    def on_error(self, error: Exception) -> None:
        self.thunk._finish(error)

    def on_completed(self) -> None:
        self.thunk._finish(None)
