"""The ``to_events`` operator: pipeline values in, typed :class:`~engine.core.events.StreamEvent` out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reactivex import Observable

from engine.core.asyncrx import LoopObservable, Relay, report_unhandled
from engine.core.events import (
    ChunkEvent,
    CompletedEvent,
    ErrorEvent,
    FullValidationEvent,
    QuickCheckEvent,
    RetryEvent,
    StreamEvent,
    StreamingDoneEvent,
)
from engine.core.thunk import GenerationCancelled
from operators.chunking.chunker import Chunk
from operators.verdicts import ChunkVerdict, FinalItem, FinalValidation, Retrying, StreamingDone

__all__ = ["chunk_of", "error_event", "to_events"]


def chunk_of(event: ChunkEvent) -> Chunk:
    """The :class:`~operators.chunking.Chunk` that *event* delivered: its text with its place
    (``chunk_index``, ``start``, ``end``, ``gap``, and ``path``/``value`` for JSON chunking),
    equal to the one the requirements judged. ``astream()`` yields these."""
    if event.path is None:
        return Chunk(event.text, event.chunk_index, event.start, event.end, event.gap)
    return Chunk.structured(
        event.text, event.chunk_index, event.start, event.end, event.gap, event.path, event.value
    )


def error_event(error: Exception) -> ErrorEvent:
    """The :class:`ErrorEvent` reporting *error*."""
    return ErrorEvent(exception_type=type(error).__name__, detail=str(error) or repr(error))


def to_events(received_text: Callable[[], str]) -> Callable[[Observable[FinalItem]], Observable[StreamEvent]]:
    """Map verdicts and end markers to events, and end with exactly one :class:`CompletedEvent`.

    *received_text* returns the text received so far (``thunk.text``): it fills
    ``full_text``. After a failure or a cancellation (an upstream
    :class:`~engine.core.thunk.GenerationCancelled`) ``full_text`` is the span of the
    emitted chunks (``received[:end of the last emitted chunk]``) and the stream
    completes; after an error it is everything received. An error (upstream, here, or a
    subscriber raising while it takes an event) becomes ``ErrorEvent`` +
    ``CompletedEvent(success=False)`` and is then passed on as ``on_error``, so
    subscribers can both show it and raise it.

    A :class:`~operators.verdicts.Retrying` marker becomes the failing chunk's
    ``QuickCheckEvent(passed=False)`` and a ``RetryEvent``; every later event carries
    the new attempt's number, and ``CompletedEvent.attempts_used`` the last one. In a
    run with retries, *received_text* returns the delivered text the current attempt
    continues plus what that attempt received, and chunk offsets count in that text.
    A flush verdict (``ChunkVerdict.flush``) has a ``QuickCheckEvent`` and no ``ChunkEvent``.
    """

    def operator(source: Observable[FinalItem]) -> Observable[StreamEvent]:
        return LoopObservable(lambda observer: _ToEvents(observer, received_text).connect(source))

    return operator


class _ToEvents(Relay[StreamEvent]):
    __slots__ = ("attempt", "emitted_end", "failed", "received_text")

    def __init__(self, downstream: Any, received_text: Callable[[], str]) -> None:
        super().__init__(downstream)
        self.received_text = received_text
        self.failed = False
        self.emitted_end = 0
        self.attempt = 1

    def _quick_check(self, verdict: ChunkVerdict) -> None:
        if verdict.requirements:
            self.downstream.on_next(
                QuickCheckEvent(
                    chunk_index=verdict.chunk.chunk_index,
                    passed=verdict.passed,
                    results=verdict.results,
                    attempt=self.attempt,
                    requirements=verdict.requirements,
                )
            )

    def on_next(self, value: FinalItem) -> None:
        # Relay.on_next's rule written out (one frame a chunk, not two).
        if self.stopped:
            return
        try:
            observer = self.downstream
            if isinstance(value, ChunkVerdict):
                self._quick_check(value)
                if not value.passed:
                    self.failed = True
                elif not value.flush:
                    chunk = value.chunk
                    # The event keeps a plain copy of the text and the place, not the Chunk
                    # (the log keeps events for the run's life); chunk_of() rebuilds it.
                    observer.on_next(
                        ChunkEvent(
                            text=str(chunk),
                            chunk_index=chunk.chunk_index,
                            attempt=self.attempt,
                            path=chunk.path,
                            value=chunk.value,
                            start=chunk.start,
                            gap=chunk.gap,
                        )
                    )
                    self.emitted_end = chunk.end
            elif isinstance(value, Retrying):
                self._quick_check(value.failed)
                self.attempt = value.attempt
                observer.on_next(RetryEvent(attempt=value.attempt, reason=value.reason))
            elif isinstance(value, StreamingDone):
                observer.on_next(StreamingDoneEvent(full_text=self.received_text(), attempt=self.attempt))
            elif isinstance(value, FinalValidation):
                observer.on_next(
                    FullValidationEvent(passed=value.passed, results=value.results, attempt=self.attempt)
                )
        except Exception as exc:
            self.end(exc)

    def _completed(self) -> None:
        text = self.received_text()
        self.downstream.on_next(
            CompletedEvent(
                success=not self.failed,
                full_text=text[: self.emitted_end] if self.failed else text,
                attempts_used=self.attempt,
            )
        )
        self.end(None)

    def _error(self, error: Exception) -> None:
        if isinstance(error, GenerationCancelled):
            text = self.received_text()[: self.emitted_end]
            self.downstream.on_next(CompletedEvent(success=False, full_text=text, attempts_used=self.attempt))
            self.end(None)
            return
        self.end(error)

    def end(self, error: Exception | None) -> None:
        """An error becomes ``ErrorEvent`` + ``CompletedEvent`` before it is passed on (once)."""
        if error is None or self.stopped:
            if error is not None:  # an error after the end: nobody is left to take it
                report_unhandled(error, "to_events: an error after the run's CompletedEvent")
            super().end(error)
            return
        self.dispose()  # stop the generation before reporting
        self.stopped = False
        try:
            self.downstream.on_next(error_event(error))
            self.downstream.on_next(
                CompletedEvent(success=False, full_text=self.received_text(), attempts_used=self.attempt)
            )
        except Exception as again:  # the subscriber cannot even take these
            if again is not error:
                report_unhandled(again, "to_events: a subscriber raised on the ErrorEvent")
        super().end(error)
