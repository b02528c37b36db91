"""Requirements and the results of checking them.

A :class:`Requirement` is checked twice in a streaming run: ``stream_validate`` on
every chunk as it arrives (tri-state, cheap), and ``validate`` once on the whole
output after a natural end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, get_args

import attrs

if TYPE_CHECKING:
    from engine.core.backend import Backend
    from engine.core.context import Context

__all__ = [
    "Outcome",
    "PartialValidationResult",
    "Requirement",
    "ValidationResult",
    "as_requirements",
    "validate_all",
]

Outcome = Literal["pass", "fail", "unknown"]
_OUTCOMES: tuple[str, ...] = get_args(Outcome)


@attrs.frozen(init=False)
class PartialValidationResult:
    """The verdict of ``stream_validate`` on one chunk: ``"pass"``, ``"fail"`` or ``"unknown"``."""

    success: Outcome
    reason: str | None = None
    score: float | None = None

    def __init__(self, success: Outcome, *, reason: str | None = None, score: float | None = None) -> None:
        if success not in _OUTCOMES:
            raise ValueError(f"PartialValidationResult takes 'pass', 'fail' or 'unknown', got {success!r}")
        self.__attrs_init__(success, reason, score)

    @property
    def failed(self) -> bool:
        """True for ``"fail"``."""
        return self.success == "fail"


@attrs.frozen(init=False)
class ValidationResult:
    """The verdict of a final ``validate`` on the whole output."""

    result: bool
    reason: str | None = None
    score: float | None = None

    def __init__(self, result: bool, *, reason: str | None = None, score: float | None = None) -> None:
        self.__attrs_init__(bool(result), reason, score)

    def as_bool(self) -> bool:
        """The verdict as a bool."""
        return self.result

    def __bool__(self) -> bool:
        return self.result


ValidationFn = Callable[[str], "bool | ValidationResult | Awaitable[bool | ValidationResult]"]


class Requirement:
    """Something the output must satisfy.

    Subclass it and override ``stream_validate`` (per chunk) and/or ``validate``
    (whole output), or pass ``validation_fn``: a plain or async function of the output
    text returning a bool or a :class:`ValidationResult`. Without either, ``validate``
    asks the backend to judge the output against ``description`` (LLM-as-judge).

    The engine copies requirements (``copy.copy``) before each run, so state kept on
    ``self`` during streaming never leaks between runs.
    """

    def __init__(self, description: str | None = None, validation_fn: ValidationFn | None = None) -> None:
        self.description = description
        self.validation_fn = validation_fn

    def format_for_llm(self) -> str:
        """How the requirement is stated to the model."""
        return self.description or ""

    @property
    def label(self) -> str:
        """A short name for this requirement in a line of output (``"max 3 sentences"``).

        The description, else the class name; subclasses override it with something shorter.
        """
        return self.description or type(self).__name__

    async def stream_validate(self, chunk: str, *, backend: Backend, ctx: Context) -> PartialValidationResult:
        """Check one chunk as it streams. The default has no opinion: ``"unknown"``."""
        return PartialValidationResult("unknown")

    async def validate(
        self,
        backend: Backend,
        ctx: Context,
        *,
        format: type | None = None,
        model_options: dict[str, Any] | None = None,
    ) -> ValidationResult:
        """Check the whole output (the newest model output in *ctx*)."""
        output = ctx.last_output()
        if output is None:
            raise ValueError(
                f"{type(self).__name__}.validate found no model output in the context; "
                "pass the context returned by generate_from_context (it ends with the output)"
            )
        text = await output.avalue()
        if self.validation_fn is not None:
            verdict = self.validation_fn(text)
            if isinstance(verdict, Awaitable):
                verdict = await verdict
            return verdict if isinstance(verdict, ValidationResult) else ValidationResult(bool(verdict))
        return await _judge(self, text, backend, model_options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r})"


async def _judge(
    req: Requirement, text: str, backend: Backend, model_options: dict[str, Any] | None
) -> ValidationResult:
    """Ask *backend* whether *text* meets *req* (LLM-as-judge), answering yes or no."""
    # Imported here: components and context are leaf modules, but keeping them out of
    # this module's import graph keeps requirements importable on their own.
    from engine.core.components import Instruction
    from engine.core.context import SimpleContext

    if not req.description:
        raise ValueError(
            f"{type(req).__name__} has no description and no validation_fn, so there is nothing "
            "to judge the output against; give it a description or override validate()"
        )
    question = Instruction(
        "Does the following output satisfy the requirement? Answer 'yes' or 'no' first, "
        f"then one sentence of reason.\n\nRequirement: {req.description}\n\nOutput:\n{text}"
    )
    thunk, _ = await backend.generate_from_context(question, SimpleContext(), model_options=model_options)
    answer = (await thunk.avalue()).strip()
    return ValidationResult(answer.lower().startswith("yes"), reason=answer)


def as_requirements(
    requirements: Sequence[Requirement | str] | Requirement | str | None,
) -> list[Requirement]:
    """Normalise what users pass as requirements: a string becomes ``Requirement(description)``."""
    if requirements is None:
        return []
    if isinstance(requirements, (Requirement, str)):
        requirements = [requirements]
    out: list[Requirement] = []
    for req in requirements:
        if isinstance(req, str):
            out.append(Requirement(req))
        elif isinstance(req, Requirement):
            out.append(req)
        else:
            raise TypeError(
                f"requirements must be Requirement objects or strings, got {type(req).__name__}: {req!r}"
            )
    return out


async def validate_all(
    requirements: Sequence[Requirement],
    backend: Backend,
    ctx: Context,
    *,
    model_options: dict[str, Any] | None = None,
) -> tuple[ValidationResult, ...]:
    """Run every requirement's ``validate(backend, ctx)`` in parallel; results in order.

    A validator that raises cancels its siblings (nothing keeps running) and its own
    exception propagates (not the ``TaskGroup``'s group). A result that is not a
    :class:`ValidationResult` is a ``TypeError`` naming the requirement.
    """
    if not requirements:
        return ()
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(req.validate(backend, ctx, model_options=model_options))
                for req in requirements
            ]
    except BaseExceptionGroup as group_error:
        raise group_error.exceptions[0] from None
    results: list[ValidationResult] = []
    for req, task in zip(requirements, tasks, strict=True):
        result = task.result()
        if not isinstance(result, ValidationResult):
            raise TypeError(
                f"{req!r}.validate() returned {result!r} ({type(result).__name__}); "
                "return ValidationResult(True | False) instead"
            )
        results.append(result)
    return tuple(results)
