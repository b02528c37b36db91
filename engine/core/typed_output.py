"""Typed output: a Python type (or a JSON schema) → the schema a server constrains generation
to, and the model's text → a value of that type.

The one place that knows about output types; ``format=`` on the session methods,
``@generative`` return types and the HTTP backends (which send the schema: Ollama's
``format``, OpenAI's ``response_format``) all call it. Schemas and validation come from
pydantic's ``TypeAdapter``, so a format may be a pydantic model, a dataclass, a
``TypedDict``, ``Literal[...]``, ``bool``/``int``/``float``/``str``, ``list[...]``,
``dict[str, ...]``, unions and ``None``, nested in any way; attrs classes are mirrored
into pydantic models field by field (their ``attrs.fields``). A plain ``dict`` is taken as
a JSON schema and sent as it is; the answer is then decoded, not validated.

Servers that enforce structured output want an object at the root (OpenAI does), so a
format whose schema is not an object (``Literal``, ``int``, ``list[...]``...) is sent
wrapped as ``{"result": ...}``; :func:`parse` unwraps it, and also accepts the bare
value, for servers that ignore the schema.
"""

from __future__ import annotations

import functools
import json
import re
import types
import typing
from collections.abc import Callable, Hashable
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin

import attrs
import pydantic
import typing_extensions

__all__ = [
    "OutputFormat",
    "OutputParseError",
    "describe",
    "is_free_text",
    "is_wrapped",
    "json_schema",
    "parse",
    "schema_name",
    "value_schema",
]

OutputFormat = Any
"""What ``format=`` accepts: a type (see the module docstring) or a JSON-schema ``dict``."""

RESULT_KEY: Final = "result"
"""The key a non-object answer is wrapped in: ``{"result": ...}``."""


class OutputParseError(ValueError):
    """The model's answer does not fit the requested format.

    ``text`` is the answer verbatim, ``format`` what it was parsed into, ``detail`` why it
    did not fit.
    """

    def __init__(self, format: OutputFormat, text: str, detail: str, *, subject: str | None = None) -> None:
        self.format = format
        self.text = text
        self.detail = detail
        what = subject or f"the model's answer is not a valid {describe(format)}"
        super().__init__(
            f"{what} ({detail}); the answer was: {text!r}. "
            "A server that enforces the schema (Ollama's format, OpenAI's response_format) avoids this; "
            "otherwise say in the prompt how to answer, or retry"
        )


def describe(format: OutputFormat) -> str:
    """A short readable name of *format* for messages (``Literal['a', 'b']``, ``Issue``, ``list[int]``)."""
    if isinstance(format, dict):
        return f"JSON value for the schema {schema_name(format)!r}"
    if isinstance(format, type) and get_origin(format) is None:
        return format.__name__
    return repr(format).replace("typing.", "").replace("typing_extensions.", "")


def is_free_text(format: OutputFormat) -> bool:
    """True when *format* asks for no structure: ``None``, ``str`` or ``Any`` (nothing is sent)."""
    return format is None or format is str or format is Any


def json_schema(format: OutputFormat) -> dict[str, Any]:
    """The JSON schema a server should constrain the answer to (a copy; safe to change).

    A non-object schema comes wrapped as ``{"result": ...}`` (see the module docstring).
    A ``dict`` is returned as given. Raises ``TypeError`` naming a type pydantic cannot
    describe.
    """
    if isinstance(format, dict):
        return dict(format)
    if not isinstance(typing.cast(object, format), Hashable):  # a list given as a type: types hash
        raise TypeError(
            f"format={describe(format)} is not an output type: use a pydantic model, an attrs class, "
            "a dataclass, a TypedDict, Literal[...], bool/int/float/str, list[...], or a JSON-schema dict"
        )
    if _is_model_like(format):
        return dict(format.model_json_schema())
    schema: dict[str, Any] = json.loads(json.dumps(_schema(format)))
    return schema


def is_wrapped(format: OutputFormat) -> bool:
    """True when *format*'s schema is sent wrapped as ``{"result": ...}`` (not an object)."""
    if isinstance(format, dict) or is_free_text(format) or _is_model_like(format):
        return False
    return _adapter(format)[1]


def value_schema(format: OutputFormat) -> dict[str, Any]:
    """The JSON schema of *format*'s value itself (never wrapped; a ``dict`` as given)."""
    if isinstance(format, dict):
        return format
    if _is_model_like(format):
        return dict(format.model_json_schema())
    return _adapter(format)[0].json_schema()


def schema_name(format: OutputFormat) -> str:
    """A name for the schema, as OpenAI's ``response_format`` wants one (``[A-Za-z0-9_-]``, ≤ 64)."""
    if isinstance(format, dict):
        raw = str(format.get("title") or "output")
    elif isinstance(format, type) and get_origin(format) is None:
        raw = format.__name__
    else:
        raw = describe(format)
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", raw).strip("_")
    return name[:64] or "output"


def parse(text: str, format: OutputFormat) -> Any:
    """The model's *text* as a value of *format*; raises :class:`OutputParseError` quoting it.

    Free text (``None``/``str``) is returned unchanged. Otherwise the text is read as JSON
    (also inside a Markdown code fence, or the first JSON object/array in it), unwrapped
    from ``{"result": ...}``, and validated by pydantic in its lax mode (``"42"`` is a valid
    ``int``, ``"yes"`` a valid ``bool``); a text that is no JSON is validated as a bare
    string (``mixed`` for ``Literal["positive", "mixed"]``).
    """
    if is_free_text(format):
        return text
    decoded, bare = _readings(text)
    if isinstance(format, dict):
        if decoded:
            return decoded[0]
        raise OutputParseError(format, text, "it is not JSON")
    if _is_model_like(format):
        if not decoded:
            raise OutputParseError(format, text, "it is not JSON")
        validate = getattr(format, "model_validate", None)
        if not callable(validate):
            return decoded[0]
        try:
            return validate(decoded[0])
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise OutputParseError(format, text, str(exc).splitlines()[0]) from None
    adapter, wrapped = _adapter(format)
    first_error: pydantic.ValidationError | None = None
    for candidate in [*decoded, bare]:
        if wrapped and isinstance(candidate, dict) and set(candidate) == {RESULT_KEY}:
            candidate = candidate[RESULT_KEY]
        try:
            return adapter.validate_python(candidate)
        except pydantic.ValidationError as exc:
            first_error = first_error or exc
    assert first_error is not None
    raise OutputParseError(format, text, _reason(first_error)) from None


def _is_model_like(format: Any) -> bool:
    """A class that is not a pydantic model but looks like one (``model_json_schema()`` and
    ``model_validate()``, as other pydantic versions and look-alikes have): used as it is."""
    return (
        isinstance(format, type)
        and not issubclass(format, pydantic.BaseModel)
        and callable(getattr(format, "model_json_schema", None))
    )


# -- the text's readings ---------------------------------------------------------------------

_NOT_JSON: Final = object()
_FENCE = re.compile(r"```[A-Za-z0-9_-]*\s*\n?(.*?)\n?```", re.DOTALL)


def _readings(text: str) -> tuple[list[Any], str]:
    """What *text* may stand for: the JSON values in it, most literal first (the whole text,
    a fenced block, the first embedded object or array), and the bare text (without
    surrounding quotes or a final full stop)."""
    stripped = text.strip()
    fence = _FENCE.search(stripped)
    body = fence.group(1).strip() if fence else stripped
    readings = [body]
    for opener, closer in (("{", "}"), ("[", "]")):
        start, end = body.find(opener), body.rfind(closer)
        if 0 <= start < end and (start, end) != (0, len(body) - 1):
            readings.append(body[start : end + 1])
    decoded = [value for value in map(_decode, readings) if value is not _NOT_JSON]
    bare = body
    for _ in range(2):
        bare = bare.strip().rstrip(".").strip()
        if len(bare) >= 2 and bare[0] == bare[-1] and bare[0] in "\"'`":
            bare = bare[1:-1]
    return decoded, bare


def _decode(body: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return _NOT_JSON


def _reason(error: pydantic.ValidationError) -> str:
    """pydantic's first complaints, one line each, with where they apply."""
    parts = []
    for item in error.errors(include_url=False)[:3]:
        where = ".".join(str(p) for p in item["loc"])
        parts.append(f"{item['msg']} at {where}" if where else item["msg"])
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


# -- types → pydantic --------------------------------------------------------------------------


def _schema(format: Any) -> dict[str, Any]:
    adapter, wrapped = _adapter(format)
    schema = adapter.json_schema()
    if not wrapped:
        return schema
    defs = schema.pop("$defs", None)
    out: dict[str, Any] = {
        "type": "object",
        "properties": {RESULT_KEY: schema},
        "required": [RESULT_KEY],
        "additionalProperties": False,
    }
    if defs:
        out["$defs"] = defs
    return out


@functools.lru_cache(maxsize=256)
def _adapter(format: Any) -> tuple[pydantic.TypeAdapter[Any], bool]:
    """The TypeAdapter for *format* and whether its schema is sent wrapped."""
    try:
        adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(_pydantic_type(format))
        schema = adapter.json_schema()
    except NameError as exc:
        raise TypeError(
            f"format={describe(format)} refers to a name that cannot be resolved ({exc}); define the "
            "types it uses at module level"
        ) from None
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError, TypeError) as exc:
        raise TypeError(
            f"format={describe(format)} is not an output type: use a pydantic model, an attrs class, "
            "a dataclass, a TypedDict, Literal[...], bool/int/float/str, list[...], or a JSON-schema "
            f"dict ({str(exc).splitlines()[0]})"
        ) from None
    return adapter, schema.get("type") != "object"


def _pydantic_type(tp: Any) -> Any:
    """*tp* with every attrs class replaced by a pydantic mirror and every ``typing.TypedDict``
    by a ``typing_extensions`` one (pydantic needs that before Python 3.12)."""
    if isinstance(tp, type) and attrs.has(tp):
        return _attrs_mirror(tp)
    if typing_extensions.is_typeddict(tp) and type(tp).__module__ == "typing":
        return _typeddict_mirror(tp)
    origin, args = get_origin(tp), get_args(tp)
    if not args or origin is Literal:
        return tp
    if origin is Annotated:
        return Annotated[(_pydantic_type(args[0]), *tp.__metadata__)]
    mapped = tuple(a if a is Ellipsis else _pydantic_type(a) for a in args)
    if mapped == args:
        return tp
    if origin in (Union, types.UnionType):
        return Union[mapped]  # noqa: UP007 (built at run time)
    return origin[mapped] if len(mapped) > 1 else origin[mapped[0]]


def _typeddict_mirror(tp: Any) -> Any:
    hints = typing.get_type_hints(tp)
    optional: frozenset[str] = getattr(tp, "__optional_keys__", frozenset())
    fields = {
        key: (typing_extensions.NotRequired if key in optional else typing_extensions.Required)[
            _pydantic_type(value)
        ]
        for key, value in hints.items()
    }
    return typing_extensions.TypedDict(tp.__name__, fields)  # type: ignore[operator]


def _attrs_mirror(cls: type) -> Any:
    """A pydantic model with *cls*'s init fields, validated into an instance of *cls*."""
    attrs.resolve_types(cls)
    fields: dict[str, Any] = {}
    for field in attrs.fields(cls):
        if not field.init:
            continue
        key = field.alias or field.name
        annotation = _pydantic_type(field.type if field.type is not None else Any)
        default = field.default
        if default is attrs.NOTHING:
            fields[key] = (annotation, ...)
        elif isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            factory = default.factory
            if default.takes_self:
                fields[key] = (annotation, ...)
            else:
                fields[key] = (annotation, pydantic.Field(default_factory=factory))
        else:
            fields[key] = (annotation, default)
    mirror: type[pydantic.BaseModel] = pydantic.create_model(cls.__name__, __doc__=cls.__doc__, **fields)
    return Annotated[mirror, pydantic.AfterValidator(_builder(cls))]


def _builder(cls: type) -> Callable[[pydantic.BaseModel], Any]:
    def build(model: pydantic.BaseModel) -> Any:
        try:
            return cls(**{name: getattr(model, name) for name in type(model).model_fields})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{cls.__name__} rejected the values: {exc}") from exc

    return build
