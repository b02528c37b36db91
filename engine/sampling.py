"""Sampling strategies: generate, validate, and try again until the requirements hold.

A strategy runs up to ``loop_budget`` attempts. Each attempt generates from the same
starting context, waits for the output, and validates it against every requirement
(the requirements of one attempt in parallel). The first attempt whose requirements all
hold is the result; when the budget runs out, the strategy picks one of the failed
attempts (:meth:`SamplingStrategy.select_from_failure`). The :class:`SamplingResult`
records every attempt, so a caller can see what was tried and why it was rejected.

* :class:`RejectionSamplingStrategy` asks again with the same action (independent draws).
* :class:`RepairTemplateStrategy` asks again with the failed requirements spelled out in
  the instruction, so the model can repair its previous answer.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from engine.core.components import Instruction
from engine.core.requirements import Requirement, ValidationResult, as_requirements, validate_all

if TYPE_CHECKING:
    from engine.core.backend import Backend
    from engine.core.context import Context
    from engine.core.thunk import ModelOutputThunk

__all__ = [
    "RejectionSamplingStrategy",
    "RepairTemplateStrategy",
    "SamplingAttempt",
    "SamplingResult",
    "SamplingStrategy",
]

logger = logging.getLogger(__name__)


@attrs.frozen
class SamplingAttempt:
    """One generation of a sampling run and the verdict of every requirement on it."""

    action: Any
    """The component that was sent (a repair strategy changes it between attempts)."""
    thunk: ModelOutputThunk[Any]
    """The computed output of this attempt."""
    ctx: Context
    """The context after this attempt: the starting context plus the action and the output."""
    validations: tuple[tuple[Requirement, ValidationResult], ...]
    """``(requirement, result)`` for every requirement, in the order given."""

    @property
    def success(self) -> bool:
        """True when every requirement held."""
        return all(result.as_bool() for _, result in self.validations)

    @property
    def failures(self) -> list[tuple[Requirement, ValidationResult]]:
        """The requirements that did not hold, with their results."""
        return [(req, result) for req, result in self.validations if not result.as_bool()]


@attrs.frozen
class SamplingResult:
    """The outcome of a sampling run: every attempt, the one chosen, and whether it succeeded."""

    attempts: tuple[SamplingAttempt, ...]
    result_index: int
    """Index into ``attempts`` of the chosen one."""
    success: bool
    """True when the chosen attempt met every requirement."""

    @property
    def chosen(self) -> SamplingAttempt:
        """The chosen attempt."""
        return self.attempts[self.result_index]

    @property
    def result(self) -> ModelOutputThunk[Any]:
        """The chosen output (a computed thunk)."""
        return self.chosen.thunk

    @property
    def result_ctx(self) -> Context:
        """The context after the chosen attempt (what a session keeps)."""
        return self.chosen.ctx

    @property
    def value(self) -> str | None:
        """The chosen output's text."""
        return self.result.value

    @property
    def sample_generations(self) -> list[ModelOutputThunk[Any]]:
        """Every attempt's output, oldest first (Mellea's name)."""
        return [attempt.thunk for attempt in self.attempts]

    @property
    def sample_validations(self) -> list[list[tuple[Requirement, ValidationResult]]]:
        """Every attempt's ``(requirement, result)`` pairs, oldest first (Mellea's name)."""
        return [list(attempt.validations) for attempt in self.attempts]

    @property
    def sample_actions(self) -> list[Any]:
        """The action sent for every attempt, oldest first (Mellea's name)."""
        return [attempt.action for attempt in self.attempts]

    def __str__(self) -> str:
        return str(self.result)


class SamplingStrategy:
    """Generate, validate, and retry up to ``loop_budget`` times.

    Subclasses change what is sent next (:meth:`repair`) and which failed attempt is
    returned when the budget runs out (:meth:`select_from_failure`).
    """

    def __init__(
        self, *, loop_budget: int = 2, requirements: Sequence[Requirement | str] | None = None
    ) -> None:
        if isinstance(loop_budget, bool) or not isinstance(loop_budget, int) or loop_budget < 1:
            raise ValueError(f"loop_budget must be a positive number of attempts, got {loop_budget!r}")
        self.loop_budget = loop_budget
        self.requirements: list[Requirement] | None = (
            as_requirements(requirements) if requirements is not None else None
        )

    def repair(self, action: Any, failed: SamplingAttempt) -> Any:
        """The action to send after *failed*; the default sends the same action again."""
        return action

    def select_from_failure(self, attempts: Sequence[SamplingAttempt]) -> int:
        """Which attempt to return when none succeeded; the default is the first."""
        return 0

    async def sample(
        self,
        action: Any,
        *,
        context: Context,
        backend: Backend,
        requirements: Sequence[Requirement | str] | None = None,
        validation_backend: Backend | None = None,
        format: Any = None,
        model_options: dict[str, Any] | None = None,
    ) -> SamplingResult:
        """Run the attempts and return every one of them with the chosen result.

        *requirements* defaults to the strategy's own. Requirements are copied
        (``copy.copy``) for every attempt, so state they keep never leaks between
        attempts. A generation or validator that raises ends the run with that error.
        """
        reqs = as_requirements(requirements) if requirements is not None else list(self.requirements or [])
        judge = validation_backend if validation_backend is not None else backend
        attempts: list[SamplingAttempt] = []
        current = action
        for index in range(self.loop_budget):
            thunk, new_ctx = await backend.generate_from_context(
                current, context, format=format, model_options=model_options
            )
            try:
                await thunk.avalue()
            except BaseException:
                thunk.cancel()
                raise
            copies = [copy.copy(req) for req in reqs]
            results = await validate_all(copies, judge, new_ctx, model_options=model_options)
            validations = tuple(zip(reqs, results, strict=True))
            attempt = SamplingAttempt(current, thunk, new_ctx, validations)
            attempts.append(attempt)
            if attempt.success:
                return SamplingResult(tuple(attempts), index, True)
            logger.debug(
                "sampling attempt %d of %d failed: %s",
                index + 1,
                self.loop_budget,
                ", ".join(repr(req) for req, _ in attempt.failures),
            )
            if index + 1 < self.loop_budget:
                current = self.repair(current, attempt)
        chosen = self.select_from_failure(attempts)
        if not 0 <= chosen < len(attempts):
            raise IndexError(
                f"{type(self).__name__}.select_from_failure returned {chosen}, "
                f"but there are only {len(attempts)} attempts"
            )
        logger.info(
            "sampling failed: no attempt of %d met every requirement; returning attempt %d",
            len(attempts),
            chosen + 1,
        )
        return SamplingResult(tuple(attempts), chosen, False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(loop_budget={self.loop_budget})"


class RejectionSamplingStrategy(SamplingStrategy):
    """Sends the same action again after a failure; on exhaustion returns the first attempt."""


class RepairTemplateStrategy(SamplingStrategy):
    """After a failure, re-sends an :class:`~engine.core.components.Instruction` with the failed
    requirements (and their reasons) appended; on exhaustion returns the last attempt.

    Actions that are not instructions are sent again unchanged.
    """

    def repair(self, action: Any, failed: SamplingAttempt) -> Any:
        """The instruction with a note listing what the previous answer got wrong."""
        if not isinstance(action, Instruction):
            return action
        original = action.description.split(_REPAIR_MARKER, 1)[0].rstrip()
        lines = [original, "", _REPAIR_MARKER]
        for req, result in failed.failures:
            reason = f" ({result.reason})" if result.reason else ""
            lines.append(f"- {req.format_for_llm() or repr(req)}{reason}")
        return Instruction("\n".join(lines), requirements=action.requirements)

    def select_from_failure(self, attempts: Sequence[SamplingAttempt]) -> int:
        """The last attempt: the most repaired one."""
        return len(attempts) - 1


_REPAIR_MARKER = "Your previous answer did not meet these requirements; fix it:"
