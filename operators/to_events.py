"""The ``to_events`` operator: pipeline values in, typed :class:`~engine.core.events.StreamEvent` out."""

from __future__ import annotations

from collections.abc import Callable

from reactivex import Observable, abc
from reactivex.disposable import SingleAssignmentDisposable

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
from operators.verdicts import ChunkVerdict, FinalItem, FinalValidation, Retrying, StreamingDone

__all__ = ["to_events"]


def to_events(received_text: Callable[[], str]) -> Callable[[Observable[FinalItem]], Observable[StreamEvent]]:
    """Map verdicts and end markers to events, and end with a :class:`CompletedEvent`.

    *received_text* returns the text received so far (``thunk.text``): it fills
    ``full_text``. After a failure ``full_text`` is the span of the emitted chunks
    (``received[:end of the last emitted chunk]``); after an error it is everything
    received. An upstream error becomes ``ErrorEvent`` + ``CompletedEvent`` and is
    then passed on as ``on_error``, so subscribers can both show it and raise it.

    A :class:`~operators.verdicts.Retrying` marker becomes the failing chunk's
    ``QuickCheckEvent(passed=False)`` and a ``RetryEvent``; every later event carries
    the new attempt's number, and ``CompletedEvent.attempts_used`` the last one. In a
    run with retries, *received_text* returns the delivered text the current attempt
    continues plus what that attempt received, and chunk offsets count in that text.
    """

    def operator(source: Observable[FinalItem]) -> Observable[StreamEvent]:
        def subscribe(
            observer: abc.ObserverBase[StreamEvent], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            failed = False
            emitted_end = 0
            attempt = 1

            def quick_check(verdict: ChunkVerdict) -> None:
                if verdict.requirements:
                    observer.on_next(
                        QuickCheckEvent(
                            chunk_index=verdict.chunk.index,
                            passed=verdict.passed,
                            results=verdict.results,
                            attempt=attempt,
                            requirements=verdict.requirements,
                        )
                    )

            def on_next(item: FinalItem) -> None:
                nonlocal failed, emitted_end, attempt
                if isinstance(item, ChunkVerdict):
                    quick_check(item)
                    if item.passed:
                        observer.on_next(
                            ChunkEvent(text=item.chunk.text, chunk_index=item.chunk.index, attempt=attempt)
                        )
                        emitted_end = item.chunk.end
                    else:
                        failed = True
                elif isinstance(item, Retrying):
                    quick_check(item.failed)
                    attempt = item.attempt
                    observer.on_next(RetryEvent(attempt=attempt, reason=item.reason))
                elif isinstance(item, StreamingDone):
                    observer.on_next(StreamingDoneEvent(full_text=received_text(), attempt=attempt))
                elif isinstance(item, FinalValidation):
                    observer.on_next(
                        FullValidationEvent(passed=item.passed, results=item.results, attempt=attempt)
                    )

            def on_completed() -> None:
                text = received_text()
                observer.on_next(
                    CompletedEvent(
                        success=not failed,
                        full_text=text[:emitted_end] if failed else text,
                        attempts_used=attempt,
                    )
                )
                observer.on_completed()

            def on_error(exc: Exception) -> None:
                observer.on_next(ErrorEvent(exception_type=type(exc).__name__, detail=str(exc) or repr(exc)))
                observer.on_next(
                    CompletedEvent(success=False, full_text=received_text(), attempts_used=attempt)
                )
                observer.on_error(exc)

            upstream = SingleAssignmentDisposable()
            upstream.disposable = source.subscribe(on_next, on_error, on_completed, scheduler=scheduler)
            return upstream

        return Observable(subscribe)

    return operator
