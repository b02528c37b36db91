"""Requirements and the results of checking them.

A :class:`Requirement` is checked twice in a streaming run: ``stream_validate`` on
every chunk as it arrives (tri-state, cheap), and ``validate`` once on the whole
output after a natural end.
"""

from __future__ import annotations

import asyncio
import inspect
import reprlib
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


def as_requirements(requirements: Any) -> list[Requirement]:
    """Normalise and check what users pass as requirements, before any request is sent.

    ``None`` is no requirement; a string becomes ``Requirement(description)`` (a single
    string is one requirement, never one per character); a :class:`Requirement` (or an
    object with async ``stream_validate`` and ``validate``) is kept; a list or tuple may
    mix them. Anything else is a ``TypeError`` naming the requirement, what is wrong and
    the fix: a requirement class instead of an instance, a ``stream_validate`` or
    ``validate`` that is a plain ``def``, a non-callable ``validation_fn``, a mapping, a
    number...
    """
    if requirements is None:
        return []
    if isinstance(requirements, (str, Requirement)) or _is_requirement_like(requirements):
        requirements = [requirements]
    elif isinstance(requirements, type):
        _check_one(requirements)  # a class: says "an instance, not the class"
    elif not isinstance(requirements, (list, tuple)):
        raise TypeError(
            f"requirements must be a list of Requirement objects or strings, got "
            f"{type(requirements).__name__} {_short(requirements)}; pass requirements=[...]"
        )
    return [_check_one(req) for req in requirements]


def _check_one(req: Any) -> Requirement:
    if isinstance(req, str):
        return Requirement(req)
    if isinstance(req, type):
        name = req.__name__
        if issubclass(req, Requirement) or _is_requirement_like(req):
            raise TypeError(
                f"requirements got the class {name}, not an instance of it; "
                f"write {name}(...) (e.g. requirements=[{name}()])"
            )
        raise TypeError(
            f"requirements got the class {name}, which is not a Requirement; "
            "pass Requirement objects or strings"
        )
    if not (isinstance(req, Requirement) or _is_requirement_like(req)):
        raise TypeError(
            f"requirements must be Requirement objects or strings, got {type(req).__name__} {_short(req)}; "
            "wrap a plain function with Requirement(description, validation_fn=...)"
        )
    for method in ("stream_validate", "validate"):
        if not inspect.iscoroutinefunction(getattr(req, method)):
            raise TypeError(
                f"{_short(req)}.{method} is a plain def; the engine awaits it, so declare it "
                f"`async def {method}(...)` ({type(req).__name__}.{method} must be a coroutine function)"
            )
    validation_fn = getattr(req, "validation_fn", None)
    if validation_fn is not None and not callable(validation_fn):
        raise TypeError(
            f"{_short(req)} has validation_fn={_short(validation_fn)}, which is not callable; "
            "pass a function of the output text returning a bool or ValidationResult"
        )
    checked: Requirement = req
    return checked


def _is_requirement_like(obj: Any) -> bool:
    return callable(getattr(obj, "stream_validate", None)) and callable(getattr(obj, "validate", None))


def _short(obj: Any) -> str:
    try:
        return reprlib.repr(obj)
    except Exception:  # a broken __repr__ must not hide the real error
        return f"<{type(obj).__name__}>"


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
