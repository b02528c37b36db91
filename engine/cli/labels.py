"""How requirements and their verdicts read in a line of output."""

from __future__ import annotations

from collections.abc import Sequence

from engine.core.events import FullValidationEvent, QuickCheckEvent
from engine.core.requirements import PartialValidationResult, Requirement, ValidationResult

__all__ = ["failures", "final_failures", "final_lines", "quick_check_lines", "verdict_text"]


def verdict_text(result: PartialValidationResult) -> str:
    """``"unknown (2 of at most 3 sentences)"``, ``"FAIL (forbidden word 'x')"``."""
    text = result.success if result.success != "fail" else "FAIL"
    return f"{text} ({result.reason})" if result.reason else text


def _names(requirements: Sequence[Requirement], count: int) -> list[str]:
    """The labels of *count* results' requirements, numbered where they are not known."""
    names = [r.label for r in requirements] if len(requirements) == count else []
    return names + [f"requirement {i + 1}" for i in range(len(names), count)]


def _with_reason(name: str, result: PartialValidationResult | ValidationResult) -> str:
    return name + (f" ({result.reason})" if result.reason else "")


def quick_check_lines(event: QuickCheckEvent, requirements: Sequence[Requirement]) -> list[str]:
    """One ``"label: verdict"`` line per requirement of a quick check."""
    names = _names(event.requirements or tuple(requirements), len(event.results))
    return [f"{name}: {verdict_text(result)}" for name, result in zip(names, event.results, strict=True)]


def failures(event: QuickCheckEvent, requirements: Sequence[Requirement]) -> list[str]:
    """``"label (reason)"`` for each requirement that failed in a quick check."""
    names = _names(event.requirements or tuple(requirements), len(event.results))
    return [_with_reason(name, r) for name, r in zip(names, event.results, strict=True) if r.failed]


def final_lines(event: FullValidationEvent, requirements: Sequence[Requirement]) -> list[str]:
    """One ``"label: pass|FAIL (reason)"`` line per requirement of the final validation."""
    # On a natural end no requirement failed, so the results follow the requirements' order.
    names = _names(requirements, len(event.results))
    return [
        _with_reason(f"{name}: {'pass' if result else 'FAIL'}", result)
        for name, result in zip(names, event.results, strict=True)
    ]


def final_failures(event: FullValidationEvent, requirements: Sequence[Requirement]) -> list[str]:
    """``"label (reason)"`` for each requirement that failed the final validation."""
    names = _names(requirements, len(event.results))
    return [_with_reason(name, r) for name, r in zip(names, event.results, strict=True) if not r]
