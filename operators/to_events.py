"""The ``to_events`` operator: pipeline values in, typed :class:`~engine.core.events.StreamEvent` out."""

from __future__ import annotations

from collections.abc import Callable

from reactivex import Observable, abc

from engine.core.asyncrx import Downstream, report_unhandled
from engine.core.events import (
    ChunkEvent,
    CompletedEvent,
    ErrorEvent,
    FullValidationEvent,
    QuickCheckEvent,
    StreamEvent,
    StreamingDoneEvent,
)
from engine.core.thunk import GenerationCancelled
from operators.verdicts import ChunkVerdict, FinalItem, FinalValidation, StreamingDone

__all__ = ["error_event", "to_events"]


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
    """

    def operator(source: Observable[FinalItem]) -> Observable[StreamEvent]:
        def subscribe(
            observer: abc.ObserverBase[StreamEvent], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            out: Downstream[StreamEvent] = Downstream(observer)
            failed = False
            emitted_end = 0

            def on_next(item: FinalItem) -> None:
                nonlocal failed, emitted_end
                if isinstance(item, ChunkVerdict):
                    passed = item.passed
                    if item.requirements:
                        out.on_next(
                            QuickCheckEvent(
                                chunk_index=item.chunk.index,
                                passed=passed,
                                results=item.results,
                                requirements=item.requirements,
                            )
                        )
                    if passed:
                        out.on_next(ChunkEvent(text=item.chunk.text, chunk_index=item.chunk.index))
                        emitted_end = item.chunk.end
                    else:
                        failed = True
                elif isinstance(item, StreamingDone):
                    out.on_next(StreamingDoneEvent(full_text=received_text()))
                elif isinstance(item, FinalValidation):
                    out.on_next(FullValidationEvent(passed=item.passed, results=item.results))

            def on_completed() -> None:
                text = received_text()
                out.on_next(
                    CompletedEvent(success=not failed, full_text=text[:emitted_end] if failed else text)
                )
                out.on_completed()

            def on_error(exc: Exception) -> None:
                if isinstance(exc, GenerationCancelled):
                    out.on_next(CompletedEvent(success=False, full_text=received_text()[:emitted_end]))
                    out.on_completed()
                else:
                    fail(exc)

            def fail(exc: Exception) -> None:
                if out.stopped:  # an error after the end: nobody is left to take it
                    report_unhandled(exc, "to_events: an error after the run's CompletedEvent")
                    return
                out.upstream.dispose()  # stop the generation before reporting
                try:
                    out.on_next(error_event(exc))
                    out.on_next(CompletedEvent(success=False, full_text=received_text()))
                except Exception as again:  # the subscriber cannot even take these
                    if again is not exc:
                        report_unhandled(again, "to_events: a subscriber raised on the ErrorEvent")
                out.on_error(exc)

            out.upstream.disposable = source.subscribe(
                out.guard(on_next, fail),
                out.guard(on_error, fail),
                out.guard(on_completed, fail),
                scheduler=scheduler,
            )
            return out.upstream

        return Observable(subscribe)

    return operator
