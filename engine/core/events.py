"""Typed events of a ``stream_with_chunking`` run (immutable, pattern-matchable).

Natural end::

    (QuickCheckEvent, ChunkEvent)* -> StreamingDoneEvent -> FullValidationEvent? -> CompletedEvent

Early exit on "fail": ``QuickCheckEvent(passed=False)`` is the last validation event,
then ``CompletedEvent(success=False)``. On an exception: ``ErrorEvent`` then
``CompletedEvent(success=False)``.

With in-stream retries (``retry=StreamRetry(...)``) a retried failure is
``QuickCheckEvent(passed=False)`` then ``RetryEvent(attempt=n + 1)``, and the run goes on
with the chunks of the new attempt (their events carry ``attempt=n + 1``); nothing
delivered before is taken back.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import attrs

from engine.core.requirements import PartialValidationResult, ValidationResult

if TYPE_CHECKING:
    from engine.core.requirements import Requirement

__all__ = [
    "ChunkEvent",
    "CompletedEvent",
    "ErrorEvent",
    "FullValidationEvent",
    "PartialObjectEvent",
    "QuickCheckEvent",
    "RetryEvent",
    "StreamEvent",
    "StreamingDoneEvent",
]


@attrs.frozen
class StreamEvent:
    """Base of every event. ``timestamp`` is the Unix time at creation (not an init argument)."""

    timestamp: float = attrs.field(init=False, factory=time.time)


@attrs.frozen
class ChunkEvent(StreamEvent):
    """A validated chunk was delivered to the consumer.

    ``text`` is the chunk's text (a plain ``str``); ``start`` is its offset in the output
    and ``end`` (``start + len(text)``) the offset after it (``full_text[start:end] ==
    text``); ``gap`` is the text between the previous chunk's end and ``start``: the place
    that the ``Chunk`` ``astream()`` yields carries (it is rebuilt from these fields).
    With JSON chunking, ``path`` is the place of the JSON value the chunk is
    (``"$.products[3]"``) and ``value`` that value parsed (JSON ``null``: ``None`` with a
    path); with text chunking both are ``None``.
    """

    # The event log keeps every event for the run's life: the text is a plain str and the
    # place two fields (end is derived), not the Chunk (a str subclass whose place needs an
    # instance dict), which costs about twice the bytes and one more object for the collector.
    text: str
    chunk_index: int
    attempt: int = 1
    path: str | None = None
    # A parsed value may be a dict or a list: left out of the hash, so events stay hashable.
    value: Any = attrs.field(default=None, hash=False)
    start: int = 0
    gap: str = ""

    @property
    def end(self) -> int:
        """The offset after the chunk in the output: ``start + len(text)`` (not kept: derived)."""
        return self.start + len(self.text)


@attrs.frozen
class PartialObjectEvent(StreamEvent):
    """With ``format=``: the typed object built from the records delivered so far changed.

    It follows the :class:`ChunkEvent` of the record that changed it (``chunk_index``);
    ``partial`` is what ``result.partial`` holds from then on.
    """

    # A partial object may be a list or an unhashable model: left out of the hash.
    partial: Any = attrs.field(hash=False)
    chunk_index: int
    attempt: int = 1


@attrs.frozen
class QuickCheckEvent(StreamEvent):
    """The per-chunk ``stream_validate`` results of every active requirement, in order.

    ``requirements`` holds the (copied) requirements the results belong to, so a
    failure can be traced to its requirement. Requirements cancelled because a
    sibling failed first report ``"unknown"`` with reason ``"cancelled"``.
    """

    chunk_index: int
    passed: bool
    results: tuple[PartialValidationResult, ...]
    attempt: int = 1
    requirements: tuple[Requirement, ...] = ()


@attrs.frozen
class StreamingDoneEvent(StreamEvent):
    """Every chunk, the flushed trailing fragment included, was validated and delivered."""

    full_text: str
    attempt: int = 1


@attrs.frozen
class FullValidationEvent(StreamEvent):
    """The final ``validate()`` results of every requirement that did not fail."""

    passed: bool
    results: tuple[ValidationResult, ...]
    attempt: int = 1


@attrs.frozen
class RetryEvent(StreamEvent):
    """A chunk failed and a new attempt (number *attempt*, 2 or more) continues the delivered text.

    Emitted right after the failing chunk's ``QuickCheckEvent(passed=False)`` in a run
    with ``retry=StreamRetry(...)``; *reason* is why the chunk failed (one
    ``requirement: reason`` per failure). The failing chunk was never delivered, its
    generation has been cancelled, and the chunks that follow belong to the new
    attempt. (Mellea defines this event but never emits it.)
    """

    attempt: int
    reason: str


@attrs.frozen
class ErrorEvent(StreamEvent):
    """An exception stopped the run (backend, chunker or validator)."""

    exception_type: str
    detail: str


@attrs.frozen
class CompletedEvent(StreamEvent):
    """Always the last event. ``success`` is False after a "fail" or an exception.

    ``attempts_used`` counts the generations of the run (1 without a retry).
    """

    success: bool
    full_text: str
    attempts_used: int = 1
