"""``@generative``: a typed, documented Python function whose body is a model call.

::

    @generative
    def classify_sentiment(summary: str) -> Literal["positive", "negative", "mixed"]:
        \"\"\"Classify the overall sentiment of the customer feedback summary.\"\"\"

    sentiment = classify_sentiment(m, summary="...")          # sync: the parsed value
    sentiment = await classify_sentiment.acall(m, summary="...")  # async

The module is named after Mellea's ``genslots``, not after the decorator, so that
``from engine import generative`` is always the decorator (a submodule of the same name would
shadow it once imported).

The prompt is built from the docstring, the signature and the arguments. The return
type's JSON schema is sent with the request (``format=``), so a server that enforces it
(Ollama's ``format``, OpenAI's ``response_format``) can only answer with a valid value; the
answer is parsed into the return type by :mod:`engine.core.typed_output` (any type
``format=`` accepts: pydantic models, attrs classes, dataclasses, TypedDicts,
``Literal[...]``, ``bool``/``int``/``float``, ``list[...]``...). A ``str`` return type
asks for free text. An answer that does not parse raises :class:`GenerativeOutputError`,
which quotes it.

An ``async def`` function becomes an async model call: ``await f(m, ...)``. A sync call
runs through ``Session.run``: inside a running event loop (as Mellea's streaming tutorial does) it
blocks that loop until the answer is there, as Mellea does; prefer ``await f.acall(m, ...)``
in async code.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import typing
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

import attrs

from engine.core import typed_output
from engine.core.components import Instruction

if TYPE_CHECKING:
    from engine.session import Session

__all__ = [
    "AsyncGenerativeFunction",
    "GenerativeFunction",
    "GenerativeOutputError",
    "generative",
]

P = ParamSpec("P")
R = TypeVar("R")


class GenerativeOutputError(typed_output.OutputParseError):
    """The model's answer could not be parsed into a generative function's return type."""

    def __init__(self, function: str, return_type: Any, text: str, detail: str) -> None:
        self.function = function
        self.return_type = return_type
        subject = (
            f"{function}() returns {typed_output.describe(return_type)}, but the model's answer could not "
            "be parsed as one"
        )
        super().__init__(return_type, text, detail, subject=subject)


def _render_arg(value: Any) -> str:
    if isinstance(value, str):
        return value
    if attrs.has(type(value)):
        return json.dumps(attrs.asdict(value), default=str)
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


class _GenerativeBase(Generic[P, R]):
    """What sync and async generative functions share: the prompt, the format and the model call."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        doc = inspect.getdoc(fn)
        if not doc:
            raise TypeError(
                f"@generative function {fn.__qualname__} needs a docstring: "
                "it is the instruction the model gets"
            )
        self.fn = fn
        self.docstring = doc
        self.signature = inspect.signature(fn)
        if "model_options" in self.signature.parameters:
            raise TypeError(
                f"@generative function {fn.__qualname__} may not have a parameter named 'model_options'; "
                "that keyword passes model options to the call"
            )
        self._return_type: Any = None
        self.__name__ = fn.__name__
        self.__qualname__ = fn.__qualname__
        self.__module__ = fn.__module__
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn
        # A forward reference to a class defined later is resolved at the first call.
        with contextlib.suppress(NameError):
            self._resolve()

    def _resolve(self) -> Any:
        if self._return_type is None:
            tp = typing.get_type_hints(self.fn).get("return", str)
            if not typed_output.is_free_text(tp):
                try:
                    typed_output.json_schema(tp)
                except TypeError as exc:
                    raise TypeError(f"@generative function {self.fn.__qualname__}: {exc}") from None
            self._return_type = tp
        return self._return_type

    @property
    def return_type(self) -> Any:
        """The annotated return type (``str`` when there is none)."""
        return self._resolve()

    @property
    def format(self) -> Any:
        """What is sent as ``format=``: the return type, or ``None`` for free text."""
        tp = self.return_type
        return None if typed_output.is_free_text(tp) else tp

    def prompt(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The instruction sent to the model for these arguments."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.fn.__name__}(): {exc}") from None
        bound.apply_defaults()
        lines = [self.docstring, "", f"Function: {self.fn.__name__}{self.signature}"]
        if bound.arguments:
            lines.append("Arguments:")
            lines.extend(f"- {name}: {_render_arg(value)}" for name, value in bound.arguments.items())
        lines.append("")
        if self.format is None:
            lines.append("Answer with the result text only.")
        else:
            schema = json.dumps(typed_output.json_schema(self.format), separators=(",", ":"))
            lines.append(f"Answer with JSON only, valid for this JSON schema: {schema}")
        return "\n".join(lines)

    def parse(self, text: str) -> R:
        """Parse *text* into the return type; :class:`GenerativeOutputError` if it does not fit."""
        try:
            return typing.cast(R, typed_output.parse(text, self.format))
        except typed_output.OutputParseError as exc:
            raise GenerativeOutputError(self.fn.__name__, self.return_type, text, exc.detail) from None

    async def acall(self, m: Session, *args: P.args, **kwargs: P.kwargs) -> R:
        """Ask the model through session *m* and return the parsed answer."""
        model_options = typing.cast("Mapping[str, Any] | None", kwargs.pop("model_options", None))
        action = Instruction(self.prompt(*args, **kwargs))
        try:
            thunk = await m.aact(
                action, strategy=None, await_result=True, format=self.format, model_options=model_options
            )
        except typed_output.OutputParseError as exc:
            raise GenerativeOutputError(self.fn.__name__, self.return_type, exc.text, exc.detail) from None
        return typing.cast(R, thunk.parsed_repr)

    def __repr__(self) -> str:
        return f"<generative {self.fn.__qualname__}{self.signature}>"


class GenerativeFunction(_GenerativeBase[P, R]):
    """A synchronous generative function: ``f(m, **kwargs)`` returns the parsed answer."""

    def __call__(self, m: Session, *args: P.args, **kwargs: P.kwargs) -> R:
        """Ask the model and return the parsed answer, blocking until it is ready (``m.run``)."""
        return m.run(self.acall(m, *args, **kwargs))


class AsyncGenerativeFunction(_GenerativeBase[P, R]):
    """An async generative function: ``await f(m, **kwargs)`` returns the parsed answer."""

    def __call__(self, m: Session, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        """A coroutine asking the model and returning the parsed answer."""
        return self.acall(m, *args, **kwargs)


@overload
def generative(fn: Callable[P, Coroutine[Any, Any, R]]) -> AsyncGenerativeFunction[P, R]: ...  # type: ignore[overload-overlap]


@overload
def generative(fn: Callable[P, R]) -> GenerativeFunction[P, R]: ...


def generative(fn: Callable[P, Any]) -> GenerativeFunction[P, Any] | AsyncGenerativeFunction[P, Any]:
    """Turn a documented, typed function into a model call taking a session first.

    The body is never run. ``def`` functions become sync calls (``.acall`` is the async
    form); ``async def`` functions become async calls.
    """
    if inspect.iscoroutinefunction(fn):
        return AsyncGenerativeFunction(fn)
    return GenerativeFunction(fn)
