"""The values that flow between the validation operators: verdicts and end markers."""

from __future__ import annotations

import attrs

from engine.core.requirements import PartialValidationResult, Requirement, ValidationResult
from operators.chunking import Chunk

__all__ = [
    "CANCELLED",
    "ChunkVerdict",
    "FinalItem",
    "FinalValidation",
    "RetryRequest",
    "Retrying",
    "StreamingDone",
    "VerdictItem",
]

CANCELLED = PartialValidationResult("unknown", reason="cancelled")
"""Reported for a requirement whose check was cancelled because a sibling failed first."""


@attrs.frozen
class ChunkVerdict:
    """A chunk and the ``stream_validate`` results of *requirements* on it, in order.

    ``flush`` marks a verdict on text the stream's chunking did not cut into a chunk
    (requirements with their own chunking judged pieces there: after the last chunk, at
    the natural end or when one of them fails): it is never delivered.
    ``restore`` is set only on a failing verdict of ``validate(..., snapshots=True)``:
    every requirement as it was when the delivered text ended (a ``copy.copy``; a
    requirement that never judged anything after it: itself), in requirement order.
    ``carry`` goes with it: for each requirement with its own chunking, the state of its
    chunker at the end of the delivered text, ``(offset, pending fragment)`` (for a
    scanning chunker, whose state is what it read: ``(start, the delivered text from its
    start)``; ``None`` for the others). A retry puts both back, so the failing text is not counted and a
    fragment withheld at the end of the delivered text is judged with what follows it.
    ``on_delivered`` says a failing piece overlaps text delivered by an earlier attempt:
    that text cannot be retracted, so the failure is not retryable.
    """

    chunk: Chunk
    results: tuple[PartialValidationResult, ...]
    requirements: tuple[Requirement, ...]
    restore: tuple[Requirement, ...] | None = attrs.field(default=None, eq=False, repr=False)
    flush: bool = False
    carry: tuple[tuple[int, str] | None, ...] | None = attrs.field(default=None, eq=False, repr=False)
    on_delivered: bool = False
    passed: bool = attrs.field(init=False, eq=False, repr=False)
    """True unless some requirement returned "fail" (worked out once, when the verdict is made:
    every stage after ``validate`` reads it)."""

    @passed.default
    def _passed(self) -> bool:
        return "fail" not in [r.success for r in self.results]

    @property
    def retryable(self) -> bool:
        """True when it failed, on text not yet delivered, and every failure may be fixed by a
        new attempt."""
        if self.on_delivered:
            return False
        failures = self.failures
        return bool(failures) and all(r.retryable for _, r in failures)

    @property
    def failures(self) -> list[tuple[Requirement, PartialValidationResult]]:
        """The ``(requirement, result)`` pairs that failed."""
        return [(q, r) for q, r in zip(self.requirements, self.results, strict=True) if r.success == "fail"]


@attrs.frozen
class Retrying:
    """*failed* was withheld and its generation cancelled; attempt *attempt* continues
    from the delivered text. Emitted by ``retry_on_fail`` instead of the failing verdict,
    so ``cancel_on_fail`` lets the run go on."""

    failed: ChunkVerdict
    attempt: int
    reason: str


@attrs.frozen
class RetryRequest:
    """What ``retry_on_fail`` hands the engine to start attempt *attempt*.

    The new attempt continues the delivered text, which ends at offset
    *delivered_end* of the run's output; its chunks are numbered from *next_index*
    (the failing chunk's index: it was never delivered) and their offsets count from
    *delivered_end*. *failed* is the failing verdict (its ``restore`` holds the
    requirements' state to continue from); *reason* says why it failed.
    """

    attempt: int
    failed: ChunkVerdict
    reason: str
    delivered_end: int
    next_index: int


@attrs.frozen
class StreamingDone:
    """Every chunk was validated and delivered, and the stream ended naturally."""


@attrs.frozen
class FinalValidation:
    """The final ``validate()`` results, in requirement order."""

    results: tuple[ValidationResult, ...]

    @property
    def passed(self) -> bool:
        """True if every result passed."""
        return all(r.as_bool() for r in self.results)


VerdictItem = ChunkVerdict | Retrying
"""What flows out of ``retry_on_fail`` and ``cancel_on_fail``."""

FinalItem = ChunkVerdict | Retrying | StreamingDone | FinalValidation
"""What flows out of ``final_validation`` into ``to_events``."""
