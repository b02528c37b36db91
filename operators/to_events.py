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
    StreamEvent,
    StreamingDoneEvent,
)
from operators.verdicts import ChunkVerdict, FinalItem, FinalValidation, StreamingDone

__all__ = ["to_events"]


def to_events(received_text: Callable[[], str]) -> Callable[[Observable[FinalItem]], Observable[StreamEvent]]:
    """Map verdicts and end markers to events, and end with a :class:`CompletedEvent`.

    *received_text* returns the text received so far (``thunk.text``): it fills
    ``full_text``. After a failure ``full_text`` is the span of the emitted chunks
    (``received[:end of the last emitted chunk]``); after an error it is everything
    received. An upstream error becomes ``ErrorEvent`` + ``CompletedEvent`` and is
    then passed on as ``on_error``, so subscribers can both show it and raise it.
    """

    def operator(source: Observable[FinalItem]) -> Observable[StreamEvent]:
        def subscribe(
            observer: abc.ObserverBase[StreamEvent], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            failed = False
            emitted_end = 0

            def on_next(item: FinalItem) -> None:
                nonlocal failed, emitted_end
                if isinstance(item, ChunkVerdict):
                    passed = item.passed
                    if item.requirements:
                        observer.on_next(
                            QuickCheckEvent(
                                chunk_index=item.chunk.index,
                                passed=passed,
                                results=item.results,
                                requirements=item.requirements,
                            )
                        )
                    if passed:
                        observer.on_next(ChunkEvent(text=item.chunk.text, chunk_index=item.chunk.index))
                        emitted_end = item.chunk.end
                    else:
                        failed = True
                elif isinstance(item, StreamingDone):
                    observer.on_next(StreamingDoneEvent(full_text=received_text()))
                elif isinstance(item, FinalValidation):
                    observer.on_next(FullValidationEvent(passed=item.passed, results=item.results))

            def on_completed() -> None:
                text = received_text()
                observer.on_next(
                    CompletedEvent(success=not failed, full_text=text[:emitted_end] if failed else text)
                )
                observer.on_completed()

            def on_error(exc: Exception) -> None:
                observer.on_next(ErrorEvent(exception_type=type(exc).__name__, detail=str(exc) or repr(exc)))
                observer.on_next(CompletedEvent(success=False, full_text=received_text()))
                observer.on_error(exc)

            upstream = SingleAssignmentDisposable()
            upstream.disposable = source.subscribe(on_next, on_error, on_completed, scheduler=scheduler)
            return upstream

        return Observable(subscribe)

    return operator
