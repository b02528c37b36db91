"""``StreamChunkingResult``: the handle of a streaming run, recording its events from the start.

A run is owned by its readers: ``result.cancel()``, ``aclose()``, leaving
``async with result``, or leaving ``astream()``/``events()`` early cancels it (the
generation stops, the connection closes) and ends it with
``CompletedEvent(success=False)``. ``result.observable`` reads without owning the run.
The run itself is started by :func:`~engine.assembly.start_run`;
:func:`streamed_to_end` and :func:`take_error` are what Mellea 0.8's handles
(:mod:`engine.stream_handles`) read of it beyond its public attributes.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

import attrs
import reactivex
from reactivex import Observable, abc

from engine.core import typed_output
from engine.core.asyncrx import ReplayLog, iterate, observe, report_unhandled
from engine.core.context import Context
from engine.core.events import (
    ChunkEvent,
    CompletedEvent,
    FullValidationEvent,
    PartialObjectEvent,
    QuickCheckEvent,
    RetryEvent,
    StreamEvent,
    StreamingDoneEvent,
)
from engine.core.requirements import PartialValidationResult, Requirement, ValidationResult
from engine.core.thunk import ModelOutputThunk
from engine.core.typed_output import OutputFormat
from operators.to_events import chunk_of, error_event

if TYPE_CHECKING:
    from engine.attempts import Attempts

__all__ = ["StreamChunkingResult", "streamed_to_end", "take_error"]


class _Feed:
    """A result's observer of its pipeline: one object (not three bound methods in a holder),
    kept by the pipeline for the run's life."""

    __slots__ = ("result",)

    def __init__(self, result: StreamChunkingResult) -> None:
        self.result = result

    def on_next(self, event: StreamEvent) -> None:
        result = self.result
        if result._ended:
            return
        try:
            result._record(event)
        except Exception as exc:
            result._fail_run(exc)
            return
        result._log.append(event)  # a subscriber that raises ends the run (_fail_run)

    def on_error(self, error: Exception) -> None:
        self.result._on_error(error)

    def on_completed(self) -> None:
        self.result._finish()


class _FailRun:
    """What a result's log calls when one of its subscribers raised: the result's ``_fail_run``,
    if the result is still alive. Weak: the log must not keep its result alive (a finished run
    is freed by reference counting). One object and its weak reference, not a closure around
    a ``WeakMethod``."""

    __slots__ = ("result",)

    def __init__(self, result: StreamChunkingResult) -> None:
        self.result = weakref.ref(result)

    def __call__(self, error: Exception) -> None:
        result = self.result()
        if result is not None:
            result._fail_run(error)


class StreamChunkingResult:
    """The running (then finished) result of :func:`stream_with_chunking`.

    Created by :func:`stream_with_chunking`, already subscribed to the pipeline:
    events are recorded from the start, so nothing is lost by reading late.
    ``astream()`` and ``events()`` read independent queues, may run concurrently,
    and are single-consumer. ``observable`` replays every event to any subscriber.

    The run is owned by its readers: :meth:`cancel`, :meth:`aclose`, leaving
    ``async with result:``, or leaving ``astream()``/``events()`` early (``break``, an
    exception, the reading task cancelled) stops the generation and closes its
    connection; the run then ends with ``CompletedEvent(success=False)``. So does
    cancelling the thunk (``result.mot.cancel_generation()``), without final validation.
    Subscribing to ``observable`` does not own the run; but a subscriber that raises
    ends it with that exception, like any other stage.

    Attributes (final once :meth:`acomplete` returns):
        completed: False after a "fail", an exception or a cancel.
        full_text: the whole output on a natural end; after a "fail" or a cancel,
            the span of the emitted chunks; after an exception, everything received.
        final_validations: the final ``validate()`` results (empty after an early exit).
        streaming_failures: ``(requirement, result)`` for every requirement that failed the
            chunk the run ended on (as in Mellea); empty when the run did not end on a "fail".
        retried_failures: ``(requirement, result)`` for the failures that a retry repaired
            (each also shown by its ``QuickCheckEvent`` and ``RetryEvent``).
        mot: the thunk of the run's generation; in a run with retries, of the latest
            attempt (its value is only what that generation received, after the
            delivered text it continued). ``mots`` lists every attempt's thunk.
        ctx: the context after the run: the action, then the output. After a retry, once
            the run has ended, it ends with a computed thunk of ``full_text``.
        attempts_used: how many generations the run took (1 without a retry).
        partial: with ``format=`` and JSON chunking, the typed object built from the
            records delivered so far (``None`` before the first).
        parsed: with ``format=``, the whole answer as that type after a successful run;
            ``None`` otherwise.
    """

    def __init__(
        self,
        mot: ModelOutputThunk[Any],
        ctx: Context,
        events: Observable[StreamEvent],
        stop: ReplayLog[None],
        *,
        attempts: Attempts | None = None,
        format: OutputFormat = None,
    ) -> None:
        self.mot = mot
        self.format = format
        self.partial: Any = None
        self.parsed: Any = None
        self.ctx = ctx
        self.mots = attempts.mots if attempts is not None else [mot]
        self.attempts_used = 1
        self._attempts = attempts
        self.completed = False
        self.full_text = ""
        self.final_validations: list[ValidationResult] = []
        self.streaming_failures: list[tuple[Requirement, PartialValidationResult]] = []
        self.retried_failures: list[tuple[Requirement, PartialValidationResult]] = []
        self._streamed_to_end = False  # a StreamingDoneEvent was seen (Mellea 0.8's completed_normally)
        self._log: ReplayLog[StreamEvent] = ReplayLog(on_observer_error=_FailRun(self))
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ended = False
        self._error: Exception | None = None
        self._error_raised = False
        self._cancelled = False
        self._consumers: tuple[str, ...] = ()  # a tuple of str: no object for the collector
        self._stop: ReplayLog[None] | None = stop
        self._subscription: abc.DisposableBase | None = None
        subscription = observe(events, _Feed(self))
        if self._ended:  # it ended while subscribing
            subscription.dispose()
        else:
            self._subscription = subscription

    @property
    def observable(self) -> Observable[StreamEvent]:
        """Every event of this run (what already happened, then live), to compose further."""
        return self._log.observable

    async def astream(self) -> AsyncIterator[str]:
        """Yield validated chunks as they are delivered; ends after the last one.

        Raises the run's exception (once, shared with :meth:`acomplete`) after the
        chunks delivered before it. A second call raises ``RuntimeError``.
        """
        self._claim("astream")
        read_to_end = False
        try:
            async with contextlib.aclosing(iterate(self._log.observable)) as events:
                async for event in events:
                    if isinstance(event, ChunkEvent):
                        yield chunk_of(event)
            read_to_end = True
        finally:
            if not read_to_end:  # the reader left early: it owned the run
                self.cancel()
        error = self._take_error()
        if error is not None:
            raise error

    async def events(self) -> AsyncIterator[StreamEvent]:
        """Yield every :class:`StreamEvent`; the last is always a ``CompletedEvent``.

        Never raises the run's exception (it arrives as an ``ErrorEvent``). A second
        call raises ``RuntimeError``. Leaving the loop early cancels the run.
        """
        self._claim("events")
        read_to_end = False
        try:
            async with contextlib.aclosing(iterate(self._log.observable)) as events:
                async for event in events:
                    yield event
            read_to_end = True
        finally:
            if not read_to_end:  # the reader left early: it owned the run
                self.cancel()

    async def acomplete(self) -> None:
        """Wait for the end of the run, final validation included.

        After an early exit the backend's task has been cancelled and has run its
        cleanup by the time this returns. Raises the run's exception unless
        ``astream()`` already raised it. If this
        wait is cancelled (``asyncio.wait_for`` timing out), the run is cancelled, the
        generation with it, and ``CancelledError`` propagates (and is raised again by
        later calls).
        """
        try:
            await asyncio.shield(self._done)
        except asyncio.CancelledError:
            self._cancel()
            raise
        if self._cancelled:
            raise asyncio.CancelledError("the run was cancelled while acomplete() waited")
        if not self.completed and self.mot.generation.cancel_requested_at is not None:
            # The generation was cancelled in this call stack; one loop turn lets the
            # backend's task run its cleanup (close the response) before we return.
            await asyncio.sleep(0)
        error = self._take_error()
        if error is not None:
            raise error

    def cancel(self) -> None:
        """Stop the run now: the generation is cancelled (its connection closed) and
        validators in flight with it; the run ends with ``CompletedEvent(success=False)``,
        ``completed`` False and ``full_text`` the span of the chunks delivered so far.
        No-op once the run has ended. Not an error: :meth:`acomplete` returns normally."""
        if self._ended:
            return
        if self._stop is not None:
            self._stop.append(None)
        if not self._ended:  # the pipeline had already stopped taking signals
            if self._subscription is not None:
                self._subscription.dispose()
            self._end(
                CompletedEvent(success=False, full_text=self._received_text(), attempts_used=len(self.mots))
            )

    def _received_text(self) -> str:
        return self._attempts.received_text() if self._attempts is not None else self.mot.text

    async def aclose(self) -> None:
        """Cancel the run if it has not ended, and give the backend's task one loop turn
        to run its cleanup (close the response). Idempotent; never raises the run's error."""
        self.cancel()
        if self.mot.generation.cancel_requested_at is not None:
            await asyncio.sleep(0)

    async def __aenter__(self) -> StreamChunkingResult:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def as_thunk(self) -> ModelOutputThunk[str]:
        """A thunk of :attr:`full_text`, with the generation's metadata (after a retry: the
        last attempt's): computed, or, after the run failed with an exception, failed with
        it (``avalue()`` raises it).

        Raises ``RuntimeError`` before the run has finished (call :meth:`acomplete` first).
        """
        if not self._done.done():
            raise RuntimeError("as_thunk() called before the run finished: await result.acomplete() first")
        if self._error is None:
            thunk: ModelOutputThunk[str] = ModelOutputThunk(value=self.full_text)
        else:
            text = reactivex.of(self.full_text) if self.full_text else reactivex.empty()
            thunk = ModelOutputThunk(reactivex.concat(text, reactivex.throw(self._error)))
        thunk.generation = attrs.evolve(self.mot.generation)
        return thunk

    # -- pipeline callbacks: trivial bookkeeping, and nothing may escape them ------

    def _record(self, event: StreamEvent) -> None:
        if isinstance(event, QuickCheckEvent) and not event.passed:
            self.streaming_failures.extend(
                (req, res)
                for req, res in zip(event.requirements, event.results, strict=True)
                if res.success == "fail"
            )
        elif isinstance(event, RetryEvent):  # the failure just recorded did not end the run
            self.retried_failures.extend(self.streaming_failures)
            self.streaming_failures.clear()
        elif isinstance(event, FullValidationEvent):
            self.final_validations = list(event.results)
        elif isinstance(event, StreamingDoneEvent):
            self._streamed_to_end = True
        elif isinstance(event, PartialObjectEvent):
            self.partial = event.partial
        elif isinstance(event, CompletedEvent):
            if event.success and self.format is not None:
                # An answer that does not fit fails the run (OutputParseError naming where).
                self.parsed = typed_output.parse(event.full_text, self.format)
            self.completed = event.success
            self.full_text = event.full_text
            self.attempts_used = event.attempts_used
            if self._attempts is not None and len(self.mots) > 1:
                self.mot = self.mots[-1]
                self.ctx = self._attempts.final_ctx()

    def _on_error(self, error: Exception) -> None:
        if self._ended:
            if error is not self._error:
                report_unhandled(error, "StreamChunkingResult: an error after the run ended")
            return
        self._error = error
        self._finish()

    def _fail_run(self, error: Exception) -> None:
        """This result's own bookkeeping, or a subscriber of :attr:`observable`, raised:
        stop the pipeline and the generation, and end the run with *error*."""
        if self._ended or (self._log.items and isinstance(self._log.items[-1], CompletedEvent)):
            # The run's events are final (CompletedEvent is the last): raise it, add no event.
            if self._error is None:
                self._error = error
            elif error is not self._error:
                report_unhandled(error, "StreamChunkingResult: a subscriber raised after the run ended")
            return
        self._error = error
        if self._subscription is not None:
            self._subscription.dispose()  # the generation stops first
        self._end(error_event(error), CompletedEvent(success=False, full_text=self._received_text()))

    def _end(self, *events: StreamEvent) -> None:
        """End the run with *events*, which the pipeline could not deliver itself."""
        self._ended = True
        self.completed = False
        for event in events:
            if isinstance(event, CompletedEvent):
                self.full_text = event.full_text
            self._log.append(event)
        self._finish()

    def _finish(self) -> None:
        self._ended = True
        # The pipeline is over: drop the subscription (it holds this result's callbacks),
        # so a finished run is freed by reference counting, not left to the cycle collector.
        subscription, self._subscription, self._stop = self._subscription, None, None
        if subscription is not None:
            subscription.dispose()
        self._log.complete()
        if not self._done.done():
            self._done.set_result(None)

    def _cancel(self) -> None:
        """External cancellation of acomplete(): cancel the run, and make acomplete() raise it."""
        if self._ended:
            return
        self._cancelled = True
        self.cancel()

    def _take_error(self) -> Exception | None:
        if self._error is None or self._error_raised:
            return None
        self._error_raised = True
        return self._error

    def _claim(self, consumer: str) -> None:
        if consumer in self._consumers:
            raise RuntimeError(
                f"StreamChunkingResult.{consumer}() is single-consumer and was already called; "
                "keep what the first call yielded, or use result.full_text after acomplete()"
            )
        self._consumers += (consumer,)

    def __repr__(self) -> str:
        state = "running" if not self._done.done() else ("completed" if self.completed else "stopped early")
        return f"StreamChunkingResult({state}, {len(self._log.items)} events)"


def streamed_to_end(result: StreamChunkingResult) -> bool:
    """Whether *result*'s stream reached its natural end (a ``StreamingDoneEvent`` was
    recorded), before final validation: Mellea 0.8's ``completed_normally``."""
    return result._streamed_to_end


def take_error(result: StreamChunkingResult) -> Exception | None:
    """*result*'s exception the first time it is taken, by this or by its own ``astream()`` or
    ``acomplete()``; ``None`` after that, or when the run had none (the exception is raised once)."""
    return result._take_error()
