"""The values that flow between the validation operators: verdicts and end markers."""

from __future__ import annotations

import attrs

from engine.core.requirements import PartialValidationResult, Requirement, ValidationResult
from operators.chunker import Chunk

__all__ = ["CANCELLED", "ChunkVerdict", "FinalItem", "FinalValidation", "StreamingDone"]

CANCELLED = PartialValidationResult("unknown", reason="cancelled")
"""Reported for a requirement whose check was cancelled because a sibling failed first."""


@attrs.frozen
class ChunkVerdict:
    """A chunk and the ``stream_validate`` results of *requirements* on it, in order.

    ``flush`` marks the verdict on the fragments that requirements with their own
    chunking withheld until the natural end: it carries no chunk text to deliver.
    ``restore`` (only on a failing verdict, only when asked for): each requirement as
    it was right after the last chunk before the failing one, for a retry to go on from.
    """

    chunk: Chunk
    results: tuple[PartialValidationResult, ...]
    requirements: tuple[Requirement, ...]
    flush: bool = False
    restore: tuple[Requirement, ...] | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def passed(self) -> bool:
        """True unless some requirement returned "fail"."""
        return not any(r.success == "fail" for r in self.results)

    @property
    def failures(self) -> list[tuple[Requirement, PartialValidationResult]]:
        """The ``(requirement, result)`` pairs that failed."""
        return [(q, r) for q, r in zip(self.requirements, self.results, strict=True) if r.success == "fail"]


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


FinalItem = ChunkVerdict | StreamingDone | FinalValidation
