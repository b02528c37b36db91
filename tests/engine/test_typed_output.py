"""Typed output: every kind of ``format=`` → its JSON schema, and the model's text → a value."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal, TypedDict

import attrs
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core import typed_output
from engine.core.typed_output import OutputParseError, json_schema, parse, schema_name


@attrs.frozen
class Issue:
    main_complaint: str
    urgency: Literal["low", "medium", "high"]
    score: float = 0.0


@attrs.frozen
class Report:
    title: str
    issues: list[Issue]
    resolved: bool | None = None
    tags: list[str] = attrs.field(factory=list)


@attrs.define
class Private:
    _secret: int


class Movie(pydantic.BaseModel):
    title: str
    year: int


@dataclasses.dataclass
class Point:
    x: int
    y: int = 0


class Person(TypedDict):
    name: str
    age: int


Sentiment = Literal["positive", "negative", "mixed"]


# -- schemas -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("format", "inner"),
    [
        (Sentiment, {"enum": ["positive", "negative", "mixed"], "type": "string"}),
        (bool, {"type": "boolean"}),
        (int, {"type": "integer"}),
        (float, {"type": "number"}),
        (list[int], {"items": {"type": "integer"}, "type": "array"}),
    ],
)
def test_non_object_formats_are_sent_wrapped_in_result(format: Any, inner: dict[str, Any]) -> None:
    assert json_schema(format) == {
        "type": "object",
        "properties": {"result": inner},
        "required": ["result"],
        "additionalProperties": False,
    }


@pytest.mark.parametrize(
    ("format", "required"),
    [
        (Movie, ["title", "year"]),
        (Point, ["x"]),
        (Person, ["name", "age"]),
        (Issue, ["main_complaint", "urgency"]),
        (Private, ["secret"]),
    ],
)
def test_object_formats_are_sent_as_their_schema(format: Any, required: list[str]) -> None:
    schema = json_schema(format)
    assert schema["type"] == "object" and schema["required"] == required
    assert schema["title"] == format.__name__
    json.dumps(schema)  # plain JSON


def test_nested_attrs_classes_become_definitions() -> None:
    schema = json_schema(Report)
    assert schema["properties"]["issues"] == {
        "items": {"$ref": "#/$defs/Issue"},
        "title": "Issues",
        "type": "array",
    }
    assert schema["$defs"]["Issue"]["properties"]["urgency"]["enum"] == ["low", "medium", "high"]
    wrapped = json_schema(list[Issue])
    assert "$defs" in wrapped and wrapped["properties"]["result"]["items"] == {"$ref": "#/$defs/Issue"}


def test_a_schema_dict_is_sent_as_given_and_is_a_copy() -> None:
    given_schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "title": "My thing!"}
    sent = json_schema(given_schema)
    assert sent == given_schema and sent is not given_schema
    assert schema_name(given_schema) == "My_thing"


def test_schema_names_are_what_openai_accepts() -> None:
    for format in (Sentiment, list[int], Movie, Issue, dict[str, int], {"type": "object"}):
        name = schema_name(format)
        assert name and len(name) <= 64 and all(c.isalnum() or c in "_-" for c in name), name
    assert schema_name(Movie) == "Movie"


def test_a_type_that_is_no_output_type_is_a_type_error_naming_the_choices() -> None:
    class Opaque:
        pass

    with pytest.raises(TypeError, match=r"format=Opaque is not an output type: use a pydantic model"):
        json_schema(Opaque)


def test_free_text_formats() -> None:
    assert typed_output.is_free_text(None) and typed_output.is_free_text(str)
    assert not typed_output.is_free_text(Sentiment)
    assert parse("  as is \n", str) == "  as is \n"


# -- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "format", "expected"),
    [
        ('{"result": "mixed"}', Sentiment, "mixed"),
        ("mixed", Sentiment, "mixed"),
        ('"negative"', Sentiment, "negative"),
        ("positive.", Sentiment, "positive"),
        ('{"result": true}', bool, True),
        ("true", bool, True),
        ("yes", bool, True),
        ("42", int, 42),
        ('{"result": 7}', int, 7),
        ("3.5", float, 3.5),
        ('{"result": [1, 2]}', list[int], [1, 2]),
        ("Here you go: [1, 2, 3] done", list[int], [1, 2, 3]),
        ('{"title": "Up", "year": "2009"}', Movie, Movie(title="Up", year=2009)),
        ('{"x": 1}', Point, Point(1)),
        ('Sure! ```json\n{"name": "Ada", "age": 36}\n```', Person, {"name": "Ada", "age": 36}),
        ('{"main_complaint": "slow", "urgency": "high"}', Issue, Issue("slow", "high")),
        (
            '{"title": "T", "issues": [{"main_complaint": "c", "urgency": "low", "score": 1}], "extra": 0}',
            Report,
            Report("T", [Issue("c", "low", 1.0)]),
        ),
        ('{"secret": 3}', Private, Private(3)),
        ('{"a": [1]}', {"type": "object"}, {"a": [1]}),
    ],
)
def test_parse(text: str, format: Any, expected: Any) -> None:
    assert parse(text, format) == expected


@pytest.mark.parametrize(
    ("text", "format", "detail"),
    [
        ("maybe", bool, "valid boolean"),
        ("4.5", int, "fractional part"),
        ("neutral", Sentiment, "'positive', 'negative' or 'mixed'"),
        ('{"main_complaint": "slow"}', Issue, "Field required at urgency"),
        ('{"main_complaint": "slow", "urgency": "urgent"}', Issue, "at urgency"),
        (
            '{"title": "T", "issues": [{"main_complaint": 3, "urgency": "low"}]}',
            Report,
            r"at issues\.0\.main_complaint",
        ),
        ("not json", {"type": "object"}, "not JSON"),
    ],
)
def test_a_text_that_does_not_fit_is_an_error_that_quotes_it(text: str, format: Any, detail: str) -> None:
    with pytest.raises(OutputParseError, match=detail) as info:
        parse(text, format)
    assert info.value.text == text and info.value.format == format
    assert repr(text) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_attrs_validators_and_converters_run() -> None:
    @attrs.frozen
    class Positive:
        n: int = attrs.field(validator=attrs.validators.gt(0))

    assert parse('{"n": 2}', Positive) == Positive(2)
    with pytest.raises(OutputParseError, match="Positive rejected the values"):
        parse('{"n": -1}', Positive)


# -- properties ----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=-(10**12), max_value=10**12), st.booleans())
def test_integers_round_trip_bare_or_wrapped(n: int, wrapped: bool) -> None:
    text = json.dumps({"result": n}) if wrapped else str(n)
    assert parse(text, int) == n


@settings(max_examples=40, deadline=None)
@given(st.lists(st.from_regex(r"[a-z]{3,8}", fullmatch=True), min_size=1, max_size=5, unique=True), st.data())
def test_literal_options_round_trip(options: list[str], data: st.DataObject) -> None:
    choice = data.draw(st.sampled_from(options))
    format = Literal[tuple(options)]  # type: ignore[valid-type]
    spelled = data.draw(
        st.sampled_from([choice, f'"{choice}"', f"{choice}.", json.dumps({"result": choice})])
    )
    assert parse(spelled, format) == choice


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=40))
def test_unparseable_answers_are_quoted_verbatim(text: str) -> None:
    try:
        value = parse(text, Literal["positive", "negative"])
    except OutputParseError as exc:
        assert exc.text == text and repr(text) in str(exc)
    else:
        assert value in ("positive", "negative")


def test_a_pydantic_look_alike_is_used_through_its_own_methods() -> None:
    class LookAlike:
        def __init__(self, a: int) -> None:
            self.a = a

        @staticmethod
        def model_json_schema() -> dict[str, Any]:
            return {"type": "object", "properties": {"a": {"type": "integer"}}}

        @classmethod
        def model_validate(cls, value: Any) -> LookAlike:
            if not isinstance(value, dict) or "a" not in value:
                raise ValueError("needs a")
            return cls(value["a"])

    assert json_schema(LookAlike) == {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert parse('{"a": 3}', LookAlike).a == 3
    with pytest.raises(OutputParseError, match="needs a"):
        parse("{}", LookAlike)
    with pytest.raises(OutputParseError, match="not JSON"):
        parse("nope", LookAlike)
