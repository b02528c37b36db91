"""Structured streaming: what ``format=`` adds to a streaming run.

* the delivery path of the records of a type (:func:`record_path`) and the JSON chunking
  that releases them (:func:`structured_chunking`), reading the user's value inside the
  ``{"result": ...}`` wrapper a non-object schema is sent in;
* :class:`PartialObject`: the typed object built from the records delivered so far,
  each validated once, as it arrives (``result.partial`` and ``PartialObjectEvent``).

The whole answer is parsed by :func:`engine.core.typed_output.parse` once the run ends.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, get_args, get_origin

import pydantic
from reactivex import Observable

from engine.core import typed_output
from engine.core.asyncrx import LoopObservable, Relay
from engine.core.events import ChunkEvent, PartialObjectEvent, StreamEvent
from engine.core.requirements import Requirement
from operators.chunking import ChunkingStrategy, JsonChunking
from operators.json_path import parse_path

__all__ = [
    "PartialObject",
    "bind_format",
    "partial_objects",
    "record_path",
    "structured_chunking",
    "wrapper_of",
]


def wrapper_of(format: Any) -> str | None:
    """The field the server gets *format*'s value wrapped in (``"result"``), or ``None``."""
    return typed_output.RESULT_KEY if typed_output.is_wrapped(format) else None


def record_path(format: Any) -> str:
    """Where the records of *format* are: the items of a list type (``$[*]``), the items of the
    first list-typed field of an object type (``$.products[*]``), else each field (``$.*``)."""
    schema = typed_output.value_schema(format)
    defs = schema.get("$defs", {})

    def resolve(s: dict[str, Any]) -> dict[str, Any]:
        ref = s.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return resolve(defs.get(ref.rsplit("/", 1)[1], {}))
        return s

    schema = resolve(schema)
    if schema.get("type") == "array":
        return "$[*]"
    for name, field in (schema.get("properties") or {}).items():
        if resolve(field).get("type") == "array":
            return f"$.{name}[*]" if name.isidentifier() else f'$["{name}"][*]'
    return "$.*" if schema.get("type") == "object" else "$"


def structured_chunking(format: Any, chunking: ChunkingStrategy) -> ChunkingStrategy:
    """The run's chunking with *format*: JSON chunking at the records of *format* when
    *chunking* is JSON chunking without a path of its own; with the format's wrapper."""
    if not isinstance(chunking, JsonChunking):
        return chunking
    path = chunking.path if chunking.path is not None else record_path(format)
    return JsonChunking(path, wrapper=wrapper_of(format))


def bind_format(reqs: list[Requirement], format: Any) -> None:
    """Point the (copied) requirements whose own chunking is JSON chunking into the user's value
    when the server gets it wrapped (a ``FieldCheck`` on ``$[*]`` reads ``$.result[*]``)."""
    wrapper = wrapper_of(format)
    if wrapper is None:
        return
    for req in reqs:
        own = getattr(req, "chunking", None)
        if isinstance(own, JsonChunking) and own.wrapper is None:
            req.chunking = JsonChunking(own.path, wrapper=wrapper)


class PartialObject:
    """The typed object built from the records delivered so far.

    Each record is validated once, as it arrives, by the type found at its path (a
    pydantic model's field, a list's item type); the object is a pydantic model made with
    ``model_construct`` (fields not delivered yet are missing) for a model format, the list
    of items for a list format, else the plain values. A record that does not validate is
    kept as parsed (the final parse names what is wrong).
    """

    def __init__(self, format: Any) -> None:
        self.format = format
        self._fields: dict[Any, Any] = {}
        self._items: list[Any] = []
        self._whole: Any = None

    def add(self, path: str, value: Any) -> Any:
        """Put the record *value* found at the concrete *path*; return the new partial object."""
        steps = parse_path(path)
        if not steps:
            self._whole = _validated(self.format, value)
            return self._whole
        head = steps[0]
        if isinstance(head, int) and len(steps) == 1:
            self._items.append(_validated(_item_type(self.format), value))
            return list(self._items)
        field_type = _field_type(self.format, head)
        if len(steps) == 1:
            self._fields[head] = _validated(field_type, value)
        else:  # an item of a field's list: the list grows
            items = self._fields.setdefault(head, [])
            items.append(_validated(_item_type(field_type), value))
        return self.value

    @property
    def value(self) -> Any:
        """The partial object now (``None`` before the first record)."""
        if self._whole is not None:
            return self._whole
        if self._items:
            return list(self._items)
        if not self._fields:
            return None
        fields: dict[str, Any] = {
            str(k): list(v) if isinstance(v, list) else v for k, v in self._fields.items()
        }
        if isinstance(self.format, type) and issubclass(self.format, pydantic.BaseModel):
            return self.format.model_construct(**fields)
        return fields


def _validated(tp: Any, value: Any) -> Any:
    if tp is None:
        return value
    try:
        return _adapter(tp).validate_python(value)
    except (pydantic.ValidationError, TypeError, pydantic.PydanticSchemaGenerationError):
        return value


@functools.lru_cache(maxsize=256)
def _adapter(tp: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(tp)


def _item_type(tp: Any) -> Any:
    if get_origin(tp) in (list, tuple, set, frozenset):
        args = get_args(tp)
        return args[0] if args else None
    return None


def _field_type(tp: Any, name: Any) -> Any:
    if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        field = tp.model_fields.get(name)
        return None if field is None else field.annotation
    return None


def partial_objects(format: Any) -> Callable[[Observable[StreamEvent]], Observable[StreamEvent]]:
    """After each :class:`ChunkEvent` of a JSON value, a :class:`PartialObjectEvent` with the
    typed object built from the records delivered so far (see :class:`PartialObject`)."""

    def operator(source: Observable[StreamEvent]) -> Observable[StreamEvent]:
        return LoopObservable(lambda observer: _Partials(observer, PartialObject(format)).connect(source))

    return operator


class _Partials(Relay[StreamEvent]):
    __slots__ = ("partial",)

    def __init__(self, downstream: Any, partial: PartialObject) -> None:
        super().__init__(downstream)
        self.partial = partial

    def _next(self, event: StreamEvent) -> None:
        self.downstream.on_next(event)
        if isinstance(event, ChunkEvent) and event.path is not None and not self.stopped:
            value = self.partial.add(event.path, event.value)
            self.downstream.on_next(PartialObjectEvent(value, event.chunk_index, event.attempt))
