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

from engine.core import arguments

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


@attrs.frozen(init=False, repr=False)
class PartialValidationResult:
    """The verdict of ``stream_validate`` on one chunk: ``"pass"``, ``"fail"`` or ``"unknown"``.

    ``retryable`` matters for a "fail" in a run with in-stream retries
    (``stream_with_chunking(..., retry=StreamRetry(...))``): ``False`` says no new
    attempt can fix it (a count limit already exceeded by the delivered text), so the
    run ends at once instead of retrying.
    """

    success: Outcome
    reason: str | None = None
    score: float | None = None
    retryable: bool = True

    def __init__(
        self,
        success: Outcome,
        *,
        reason: str | None = None,
        score: float | None = None,
        retryable: bool = True,
    ) -> None:
        if success not in _OUTCOMES:
            raise ValueError(f"PartialValidationResult takes 'pass', 'fail' or 'unknown', got {success!r}")
        self.__attrs_init__(success, reason, score, bool(retryable))

    def __repr__(self) -> str:
        # retryable shows only when it is not the default, so reprs stay as before.
        extra = "" if self.retryable else ", retryable=False"
        return (
            f"PartialValidationResult(success={self.success!r}, reason={self.reason!r}, "
            f"score={self.score!r}{extra})"
        )

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


_UNKNOWN = PartialValidationResult("unknown")

ValidationFn = Callable[[str], "bool | ValidationResult | Awaitable[bool | ValidationResult]"]

Policy = Literal["fail", "unknown"]
"""What a check that timed out counts as: ``"fail"`` (fail closed) or ``"unknown"`` (fail open)."""
ErrorPolicy = Literal["raise", "unknown"]
"""What a check that raised does: ``"raise"`` ends the run with the error; ``"unknown"`` fails open."""
_POLICIES: tuple[str, ...] = get_args(Policy)
_ERROR_POLICIES: tuple[str, ...] = get_args(ErrorPolicy)


class Requirement:
    """Something the output must satisfy.

    Subclass it and override ``stream_validate`` (per chunk) and/or ``validate``
    (whole output), or pass ``validation_fn``: a plain or async function of the output
    text returning a bool or a :class:`ValidationResult`. Without either, ``validate``
    asks the backend to judge the output against ``description`` (LLM-as-judge).

    The engine copies requirements (``copy.copy``) before each run, so state kept on
    ``self`` during streaming never leaks between runs. In a run with in-stream retries
    it also copies them before each chunk and puts that state back when a chunk is
    retried, so keep state in values you reassign (or define ``__copy__``).

    Scheduling (keyword arguments, also class attributes a subclass may set):

    * ``chunking``: this requirement's own chunking (``"word"``, ``"sentence"``,
      ``"paragraph"`` or a strategy). The output is cut with it as it streams, and
      each of its own pieces goes to ``stream_validate`` (or, as in Mellea 0.8, to
      ``_stream_validate``), in order, one at a time; at the end its withheld fragment
      is checked too. A chunk of the stream is delivered only after every piece
      overlapping it was judged, so a chunking coarser than the stream's holds delivery
      until its piece is complete. ``None`` (default): it checks the stream's chunks.
    * ``concurrency``: how many chunks it may check at once. ``1`` (default) keeps
      its chunks strictly in order, one at a time, so state on ``self`` is safe; a
      stateless check may declare more. Requirements never wait for each other.
    * ``timeout`` (seconds: a finite int or float > 0) and ``on_timeout``: a
      ``stream_validate`` or ``validate`` still running after ``timeout`` is cancelled and
      counts as ``on_timeout``: ``"fail"`` (default: fail closed) or ``"unknown"``; its reason says
      ``"timed out after 0.5 s"``. ``None``: the run's default (no deadline unless
      ``stream_with_chunking(..., validation_timeout=...)`` sets one).
    * ``on_error``: ``"raise"`` (default) ends the run with the check's exception;
      ``"unknown"`` records it as an ``"unknown"`` result and goes on (fail open).

    Every argument is checked here (``TypeError`` for a wrong type, ``ValueError`` for a
    wrong value, naming it), and the settings again when a run or a session call takes
    the requirement, before anything starts (a subclass may set them as class
    attributes). A chunking alias is resolved then: ``chunking="words"`` is refused by
    the run, before the generation starts.
    """

    chunking: Any = None
    concurrency: int = 1
    timeout: float | None = None
    on_timeout: Policy = "fail"
    on_error: ErrorPolicy = "raise"

    def __init__(
        self,
        description: str | None = None,
        validation_fn: ValidationFn | None = None,
        *,
        chunking: Any = None,
        concurrency: int = 1,
        timeout: float | None = None,
        on_timeout: Policy = "fail",
        on_error: ErrorPolicy = "raise",
    ) -> None:
        self.description = arguments.text("Requirement description", description, optional=True)
        if validation_fn is not None and not callable(validation_fn):
            raise TypeError(
                f"Requirement validation_fn must be a function of the output text returning a bool or "
                f"ValidationResult, or None; got {arguments.shown(validation_fn)}"
            )
        self.validation_fn = validation_fn
        _check_settings("Requirement ", chunking, concurrency, timeout, on_timeout, on_error)
        self.chunking = chunking
        self.concurrency = concurrency
        self.timeout = timeout
        self.on_timeout = on_timeout
        self.on_error = on_error

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
        """Check one chunk as it streams (Mellea 0.7's hook). The default calls :meth:`_stream_validate`."""
        return await self._stream_validate(chunk, backend=backend, ctx=ctx)

    async def _stream_validate(
        self, chunk: str, *, backend: Backend, ctx: Context
    ) -> PartialValidationResult:
        """Check one chunk (Mellea 0.8's hook). The default has no opinion: ``"unknown"``."""
        return _UNKNOWN

    async def validate(
        self,
        backend: Backend,
        ctx: Context,
        *,
        format: type | None = None,
        model_options: dict[str, Any] | None = None,
    ) -> ValidationResult:
        """Check the whole output (the newest model output in *ctx*)."""
        text = await self._output_text(ctx)
        if self.validation_fn is not None:
            verdict = self.validation_fn(text)
            if isinstance(verdict, Awaitable):
                verdict = await verdict
            return verdict if isinstance(verdict, ValidationResult) else ValidationResult(bool(verdict))
        return await _judge(self, text, backend, model_options)

    async def _output_text(self, ctx: Context) -> str:
        """The text of the newest model output in *ctx*: what :meth:`validate` judges."""
        output = ctx.last_output()
        if output is None:
            raise ValueError(
                f"{type(self).__name__}.validate found no model output in the context; "
                "pass the context returned by generate_from_context (it ends with the output)"
            )
        text: str = await output.avalue()
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r})"


_CHUNKING_TYPES = "a chunking alias (a str such as 'word'), a ChunkingStrategy (with split()), or None"


def _check_settings(
    owner: str, chunking: Any, concurrency: Any, timeout: Any, on_timeout: Any, on_error: Any
) -> None:
    """Check a requirement's scheduling settings; *owner* prefixes their names in messages
    (``"Requirement "``, ``"requirements[2]."``).

    A chunking alias is only checked to be a str here: the aliases belong to the
    chunking strategies (``operators``), and a run resolves them before it starts.
    """
    if chunking is not None and not isinstance(chunking, str):
        arguments.has_method(f"{owner}chunking", chunking, "split", _CHUNKING_TYPES)
    arguments.whole_number(f"{owner}concurrency", concurrency, minimum=1)
    arguments.positive_seconds(f"{owner}timeout", timeout)
    arguments.one_of(f"{owner}on_timeout", on_timeout, _POLICIES)
    arguments.one_of(f"{owner}on_error", on_error, _ERROR_POLICIES)


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
    return [_check_one(req, index) for index, req in enumerate(requirements)]


def _check_one(req: Any, index: int = 0) -> Requirement:
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
    # Settings may have been set after construction (or as class attributes): checked again,
    # so that a run never starts with one it cannot honour.
    _check_settings(
        f"requirements[{index}].",
        getattr(req, "chunking", None),
        getattr(req, "concurrency", 1),
        getattr(req, "timeout", None),
        getattr(req, "on_timeout", "fail"),
        getattr(req, "on_error", "raise"),
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
    validation_timeout: float | None = None,
) -> tuple[ValidationResult, ...]:
    """Run every requirement's ``validate(backend, ctx)`` in parallel; results in order.

    Each runs under its requirement's deadline (``Requirement.timeout``, else
    *validation_timeout*): past it, it is cancelled and counts as its ``on_timeout`` policy
    (``"fail"``: a failed result; ``"unknown"``: not counted as a failure, since a
    final result is a bool), with the reason ``"timed out after 0.5 s"``. A validator
    that raises cancels its siblings (nothing keeps running) and its own exception
    propagates (not the ``TaskGroup``'s group), unless its ``on_error`` is
    ``"unknown"``. A result that is not a :class:`ValidationResult` is a ``TypeError``
    naming the requirement.
    """
    arguments.positive_seconds("validation_timeout", validation_timeout)
    arguments.optional_mapping("model_options", model_options)
    if not requirements:
        return ()
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(_validate_one(req, backend, ctx, model_options, validation_timeout))
                for req in requirements
            ]
    except BaseExceptionGroup as group_error:
        raise group_error.exceptions[0] from None
    return tuple(task.result() for task in tasks)


async def _validate_one(
    req: Requirement,
    backend: Backend,
    ctx: Context,
    model_options: dict[str, Any] | None,
    default_timeout: float | None,
) -> ValidationResult:
    own = getattr(req, "timeout", None)
    timeout = own if own is not None else default_timeout
    try:
        if timeout is None:
            result = await req.validate(backend, ctx, model_options=model_options)
        else:
            async with asyncio.timeout(timeout) as deadline:
                result = await req.validate(backend, ctx, model_options=model_options)
    except TimeoutError:
        if timeout is None or not deadline.expired():
            raise
        reason = f"timed out after {timeout:g} s"
        if getattr(req, "on_timeout", "fail") == "unknown":
            return ValidationResult(True, reason=f"{reason} (on_timeout='unknown': not counted as a failure)")
        return ValidationResult(False, reason=reason)
    except Exception as exc:
        if getattr(req, "on_error", "raise") != "unknown":
            raise
        return ValidationResult(
            True,
            reason=f"check raised {type(exc).__name__}: {exc} (on_error='unknown': not counted as a failure)",
        )
    if not isinstance(result, ValidationResult):
        raise TypeError(
            f"{req!r}.validate() returned {result!r} ({type(result).__name__}); "
            "return ValidationResult(True | False) instead"
        )
    return result
