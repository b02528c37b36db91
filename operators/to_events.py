"""The ``to_events`` operator: pipeline values in, typed :class:`~engine.core.events.StreamEvent` out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reactivex import Observable

from engine.core.asyncrx import LoopObservable, Relay
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
        return LoopObservable(lambda observer: _ToEvents(observer, received_text).connect(source))

    return operator


class _ToEvents(Relay[StreamEvent]):
    __slots__ = ("emitted_end", "failed", "received_text")

    def __init__(self, downstream: Any, received_text: Callable[[], str]) -> None:
        super().__init__(downstream)
        self.received_text = received_text
        self.failed = False
        self.emitted_end = 0

    def on_next(self, item: FinalItem) -> None:
        if self.stopped:
            return
        observer = self.downstream
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
            if not passed:
                self.failed = True
            elif not item.flush:
                observer.on_next(ChunkEvent(text=item.chunk.text, chunk_index=item.chunk.index))
                self.emitted_end = item.chunk.end
        elif isinstance(item, StreamingDone):
            observer.on_next(StreamingDoneEvent(full_text=self.received_text()))
        elif isinstance(item, FinalValidation):
            observer.on_next(FullValidationEvent(passed=item.passed, results=item.results))

    def on_completed(self) -> None:
        if self.stopped:
            return
        text = self.received_text()
        self.downstream.on_next(
            CompletedEvent(
                success=not self.failed, full_text=text[: self.emitted_end] if self.failed else text
            )
        )
        super().on_completed()

    def on_error(self, error: Exception) -> None:
        if self.stopped:
            return
        observer = self.downstream
        observer.on_next(ErrorEvent(exception_type=type(error).__name__, detail=str(error) or repr(error)))
        observer.on_next(CompletedEvent(success=False, full_text=self.received_text()))
        super().on_error(error)
