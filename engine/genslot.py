"""``@generative``: a typed, documented Python function whose body is a model call.

::

    @generative
    def classify_sentiment(summary: str) -> Literal["positive", "negative", "mixed"]:
        \"\"\"Classify the overall sentiment of the customer feedback summary.\"\"\"

    sentiment = classify_sentiment(m, summary="...")          # sync: the parsed value
    sentiment = await classify_sentiment.acall(m, summary="...")  # async

The prompt is built from the docstring, the signature and the arguments, plus a line
saying how to answer for the return type. The model's answer is parsed into the
return type: ``str``, ``bool``, ``int``, ``float``, ``Literal[...]``, and, from JSON,
``dict``, ``list`` and attrs classes (nested fields converted by their annotations).
An answer that does not parse raises :class:`GenerativeOutputError`, which quotes it.

An ``async def`` function becomes an async model call: ``await f(m, ...)``.

A synchronous call made inside a running event loop (as seed 001's tutorial does)
cannot wait on that loop, so it runs the model call on a private event loop in a
helper thread and blocks until it is done, as Mellea does; prefer ``await f.acall(m,
...)`` in async code, which keeps the loop free.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Coroutine, Mapping
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    Literal,
    ParamSpec,
    TypeVar,
    Union,
    get_args,
    get_origin,
    overload,
)

import attrs

from engine.sampling import make_instruction

if TYPE_CHECKING:
    from engine.session import Session

__all__ = [
    "AsyncGenerativeFunction",
    "GenerativeFunction",
    "GenerativeOutputError",
    "generative",
    "parse_output",
]

P = ParamSpec("P")
R = TypeVar("R")


class GenerativeOutputError(ValueError):
    """The model's answer could not be parsed into the function's return type."""

    def __init__(self, function: str, return_type: Any, text: str, detail: str) -> None:
        self.function = function
        self.return_type = return_type
        self.text = text
        self.detail = detail
        super().__init__(
            f"{function}() returns {_type_name(return_type)}, but the model's answer could not be "
            f"parsed as one ({detail}); the answer was: {text!r}"
        )


class _ParseError(Exception):
    """Internal: why a value did not fit a type (wrapped into GenerativeOutputError)."""


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and get_origin(tp) is None:
        return tp.__name__
    return repr(tp).replace("typing.", "")


# -- parsing ---------------------------------------------------------------------------

_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n?(.*?)\n?```$", re.DOTALL)
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
_TRUE = frozenset({"true", "yes", "y"})
_FALSE = frozenset({"false", "no", "n"})


def _unfence(text: str) -> str:
    stripped = text.strip()
    match = _FENCE.match(stripped)
    return match.group(1).strip() if match else stripped


def _bare(text: str) -> str:
    """The answer without code fences, surrounding quotes or a trailing full stop."""
    out = _unfence(text)
    for _ in range(2):
        out = out.strip().rstrip(".").strip()
        if len(out) >= 2 and out[0] == out[-1] and out[0] in "\"'`":
            out = out[1:-1]
    return out.strip()


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _parse_bool(text: str) -> bool:
    bare = _bare(text).lower()
    if bare in _TRUE:
        return True
    if bare in _FALSE:
        return False
    first = re.match(r"[a-z]+", bare)
    if first and first.group(0) in _TRUE:
        return True
    if first and first.group(0) in _FALSE:
        return False
    raise _ParseError("expected true/false or yes/no")


def _parse_number(text: str, tp: type[int] | type[float]) -> int | float:
    bare = _bare(text)
    if re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?", bare):  # thousands separators: 1,234
        bare = bare.replace(",", "")
    try:
        return tp(bare)
    except ValueError:
        pass
    numbers = _NUMBER.findall(bare)
    if len(numbers) != 1:
        raise _ParseError(f"expected one number, found {len(numbers)}")
    try:
        return tp(numbers[0])
    except ValueError:
        raise _ParseError(f"{numbers[0]!r} is not {'an integer' if tp is int else 'a number'}") from None


def _parse_literal(text: str, options: tuple[Any, ...]) -> Any:
    bare = _bare(text)
    for option in options:
        if str(option) == bare:
            return option
    lowered = bare.lower()
    for option in options:
        if str(option).lower() == lowered:
            return option
    found = [
        option
        for option in options
        if re.search(rf"(?<![\w-]){re.escape(str(option).lower())}(?![\w-])", text.lower())
    ]
    if len(found) == 1:
        return found[0]
    listed = ", ".join(repr(o) for o in options)
    if found:
        raise _ParseError(f"it mentions several of {listed}")
    raise _ParseError(f"expected one of {listed}")


def _parse_json(text: str) -> Any:
    body = _unfence(text)
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        pass
    for opener, closer in (("{", "}"), ("[", "]")):
        start, end = body.find(opener), body.rfind(closer)
        if 0 <= start < end:
            try:
                return json.loads(body[start : end + 1])
            except json.JSONDecodeError:
                continue
    raise _ParseError("expected JSON")


def _at(path: str, parse: Callable[..., Any], *args: Any) -> Any:
    """``parse(*args)``, with *path* added to the reason when it fails."""
    try:
        return parse(*args)
    except _ParseError as exc:
        if not path:
            raise
        raise _ParseError(f"{exc} at {path}") from None


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Convert a decoded JSON *value* to *tp*, strictly (no silent truncation)."""
    where = f" at {path}" if path else ""
    origin = get_origin(tp)
    if tp is Any or tp is object:
        return value
    if tp is type(None) or tp is None:
        if value is None:
            return None
        raise _ParseError(f"expected null{where}, got {value!r}")
    if _is_union(tp):
        errors = []
        for arm in get_args(tp):
            try:
                return _coerce(value, arm, path)
            except _ParseError as exc:
                errors.append(str(exc))
        raise _ParseError("; ".join(errors))
    if origin is Literal:
        for option in get_args(tp):
            if value == option and type(value) is type(option):
                return option
        raise _ParseError(f"expected one of {get_args(tp)!r}{where}, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise _ParseError(f"expected a string{where}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            return _at(path, _parse_bool, value)
        raise _ParseError(f"expected true/false{where}, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return _at(path, _parse_number, value, int)
        raise _ParseError(f"expected an integer{where}, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            return _at(path, _parse_number, value, float)
        raise _ParseError(f"expected a number{where}, got {value!r}")
    if tp in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, list):
            raise _ParseError(f"expected a JSON array{where}, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise _ParseError(f"expected {len(args)} items{where}, got {len(value)}")
            return tuple(
                _coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        item = args[0] if args else Any
        converted = [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(converted) if (tp is tuple or origin is tuple) else converted
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise _ParseError(f"expected a JSON object{where}, got {value!r}")
        args = get_args(tp)
        val_type = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, val_type, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(tp, type) and attrs.has(tp):
        if not isinstance(value, dict):
            raise _ParseError(f"expected a JSON object for {tp.__name__}{where}, got {value!r}")
        attrs.resolve_types(tp)
        kwargs: dict[str, Any] = {}
        missing = []
        for field in attrs.fields(tp):
            if not field.init:
                continue
            key = field.alias or field.name
            if key in value:
                kwargs[key] = _coerce(value[key], field.type or Any, f"{path}.{key}" if path else key)
            elif field.name in value:
                kwargs[key] = _coerce(value[field.name], field.type or Any, f"{path}.{key}" if path else key)
            elif field.default is attrs.NOTHING:
                missing.append(key)
        if missing:
            raise _ParseError(f"{tp.__name__}{where} is missing {', '.join(missing)}")
        try:
            return tp(**kwargs)
        except (TypeError, ValueError) as exc:
            raise _ParseError(f"{tp.__name__}{where} rejected the values: {exc}") from exc
    raise TypeError(f"@generative cannot parse model output into {_type_name(tp)}")


def _check_supported(tp: Any) -> None:
    """Raise TypeError now for a return type that could never be parsed."""
    origin = get_origin(tp)
    if tp in (str, bool, int, float, dict, list, tuple, Any, type(None)) or origin is Literal:
        return
    if _is_union(tp) or origin in (list, tuple, dict):
        for arg in get_args(tp):
            if arg is not Ellipsis:
                _check_supported(arg)
        return
    if isinstance(tp, type) and attrs.has(tp):
        return
    raise TypeError(
        f"@generative functions may return str, bool, int, float, Literal[...], list, dict, or an attrs "
        f"class; {_type_name(tp)} is not supported"
    )


def parse_output(text: str, return_type: Any, *, function: str = "generative") -> Any:
    """Parse a model's *text* into *return_type*; raises :class:`GenerativeOutputError` quoting it."""
    try:
        if return_type is str or return_type is Any:
            return _unfence(text)
        if return_type is bool:
            return _parse_bool(text)
        if return_type in (int, float):
            return _parse_number(text, return_type)
        if get_origin(return_type) is Literal:
            options = get_args(return_type)
            if all(isinstance(o, str) for o in options):
                return _parse_literal(text, options)
            return _coerce(_parse_json(text), return_type, "")
        return _coerce(_parse_json(text), return_type, "")
    except _ParseError as exc:
        raise GenerativeOutputError(function, return_type, text, str(exc)) from None


# -- prompting -----------------------------------------------------------------------------


def _describe(tp: Any) -> str:
    """How a type reads in a prompt (JSON shapes for attrs classes)."""
    origin = get_origin(tp)
    if isinstance(tp, type) and attrs.has(tp):
        attrs.resolve_types(tp)
        fields = ", ".join(f'"{f.alias or f.name}": {_describe(f.type)}' for f in attrs.fields(tp) if f.init)
        return "{" + fields + "}"
    if origin is Literal:
        return " | ".join(json.dumps(o) for o in get_args(tp))
    if origin in (list, tuple):
        items = [a for a in get_args(tp) if a is not Ellipsis]
        return f"[{_describe(items[0]) if items else 'any'}, ...]"
    if origin is dict:
        pair = get_args(tp)
        return f"{{string: {_describe(pair[1])}}}" if len(pair) == 2 else "object"
    if _is_union(tp):
        return " | ".join(_describe(a) for a in get_args(tp))
    names = {
        str: "string",
        bool: "true/false",
        int: "integer",
        float: "number",
        dict: "object",
        list: "array",
    }
    return names.get(tp, "null" if tp is type(None) else _type_name(tp))


def _answer_format(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is str or tp is Any:
        return "Answer with the result text only."
    if tp is bool:
        return "Answer with exactly one word: true or false."
    if tp is int:
        return "Answer with a single integer and nothing else."
    if tp is float:
        return "Answer with a single number and nothing else."
    if origin is Literal and all(isinstance(o, str) for o in get_args(tp)):
        return "Answer with exactly one of: " + ", ".join(get_args(tp)) + " (nothing else)."
    return f"Answer with JSON only, of this shape: {_describe(tp)}"


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
    """What sync and async generative functions share: prompt, parse, and the model call."""

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
            hints = typing.get_type_hints(self.fn)
            tp = hints.get("return", str)
            _check_supported(tp)
            self._return_type = tp
        return self._return_type

    @property
    def return_type(self) -> Any:
        """The annotated return type (``str`` when there is none)."""
        return self._resolve()

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
        lines.extend(["", _answer_format(self.return_type)])
        return "\n".join(lines)

    def parse(self, text: str) -> R:
        """Parse *text* into the return type; :class:`GenerativeOutputError` if it does not fit."""
        return typing.cast(R, parse_output(text, self.return_type, function=self.fn.__name__))

    async def acall(self, m: Session, *args: P.args, **kwargs: P.kwargs) -> R:
        """Ask the model through session *m* and return the parsed answer."""
        model_options = typing.cast("Mapping[str, Any] | None", kwargs.pop("model_options", None))
        action = make_instruction(self.prompt(*args, **kwargs))
        thunk = await m.aact(action, strategy=None, model_options=model_options)
        try:
            text = await thunk.avalue()
        except BaseException:
            thunk.cancel()
            raise
        value = self.parse(text)
        thunk.parsed_repr = value
        return value

    def __repr__(self) -> str:
        return f"<generative {self.fn.__qualname__}{self.signature}>"


class GenerativeFunction(_GenerativeBase[P, R]):
    """A synchronous generative function: ``f(m, **kwargs)`` returns the parsed answer."""

    def __call__(self, m: Session, *args: P.args, **kwargs: P.kwargs) -> R:
        """Ask the model and return the parsed answer, blocking until it is ready."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return m._run_sync(self.acall(m, *args, **kwargs), "acall")
        # Called from a coroutine: this loop cannot be waited on, so run the call on a
        # private loop in a helper thread (blocking this one, as Mellea does).
        fork = m._fork_for_other_loop()

        def work() -> R:
            try:
                return asyncio.run(self.acall(fork, *args, **kwargs))
            finally:
                m.ctx = fork.ctx
                m._warned_ctx = m._warned_ctx or fork._warned_ctx

        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rxllm-generative") as pool:
            return pool.submit(work).result()


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
