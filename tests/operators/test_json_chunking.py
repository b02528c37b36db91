"""JSON chunking: one chunk per JSON value completed at the delivery path, each carrying its
path and its parsed value; the chunking laws over random documents and random slicings; text
that is not JSON fails at its offset, whatever the slicing; the scan is linear."""

from __future__ import annotations

import copy
import json
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.scripted import ScriptedBackend
from engine import PartialValidationResult, Requirement, SimpleContext, stream_with_chunking
from engine.core.events import ChunkEvent, ErrorEvent
from operators import (
    Chunk,
    Chunker,
    JsonChunking,
    JsonChunkingError,
    SentenceChunking,
    resolve_chunking_strategy,
)
from operators.json_path import ANY_FIELD, ANY_INDEX, Step, format_path, matches, parse_path
from operators.testing import check_chunking_strategy, check_laws, slicings

# -- random JSON documents ------------------------------------------------------

_KEYS = st.text(alphabet=st.sampled_from('ab_Z9 "\\é😀\n'), max_size=4)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.sampled_from('ab "\\/\n\t\x01é😀{}[],:'), max_size=6),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=4)),
    max_leaves=12,
)
_DOCUMENTS = st.one_of(st.lists(_VALUES, max_size=5), st.dictionaries(_KEYS, _VALUES, max_size=5))


@st.composite
def layouts(draw: st.DrawFn) -> tuple[Any, str]:
    """A document and one way a model might write it: any indentation and spacing, unicode
    escaped or not, optionally inside prose and a Markdown code fence."""
    document = draw(_DOCUMENTS)
    indent = draw(st.sampled_from([None, 0, 1, 2, "\t"]))
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")]))
    body = json.dumps(document, indent=indent, separators=separators, ensure_ascii=draw(st.booleans()))
    before = draw(st.sampled_from(["", "Here is the JSON:\n", "```json\n", "Sure!\n```\n", "  \n"]))
    after = draw(st.sampled_from(["", "\n", "\n```", "\n```\nHope this helps. {[", " trailing"]))
    return document, before + body + after


def places(document: Any, pattern: tuple[Step, ...] | None) -> list[tuple[str, Any]]:
    """The reference: every (path, value) the delivery path names in *document*, in order."""
    found: list[tuple[str, Any]] = []

    def walk(value: Any, steps: list[Step]) -> None:
        if pattern is not None and matches(pattern, steps):
            found.append((format_path(steps), value))
            return
        if isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, [*steps, i])
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, [*steps, key])

    if pattern is not None:
        walk(document, [])
    elif isinstance(document, list):
        found.extend((format_path([i]), item) for i, item in enumerate(document))
    else:
        carrier = next((k for k, v in document.items() if isinstance(v, list)), None)
        for key, item in document.items():
            if key == carrier:
                found.extend((format_path([key, i]), x) for i, x in enumerate(item))
            else:
                found.append((format_path([key]), item))
    return found


@st.composite
def patterns(draw: st.DrawFn, document: Any) -> tuple[Step, ...]:
    """A path into *document*: a concrete place in it, with some steps made wildcards."""
    steps: list[Step] = []
    value = document
    while draw(st.integers(0, 3)) and isinstance(value, (list, dict)) and value:
        if isinstance(value, list):
            i = draw(st.integers(0, len(value) - 1))
            steps.append(ANY_INDEX if draw(st.booleans()) else i)
            value = value[i]
        else:
            key = draw(st.sampled_from(list(value)))
            steps.append(ANY_FIELD if draw(st.booleans()) else key)
            value = value[key]
    return tuple(steps)


def run(strategy: JsonChunking, deltas: list[str], start_offset: int = 0) -> list[Chunk]:
    chunker = Chunker(strategy, start_offset=start_offset)
    return [c for delta in deltas for c in chunker.feed(delta)] + chunker.flush()


# -- the laws and the values ----------------------------------------------------


def test_json_chunking_obeys_the_chunking_laws_on_random_documents() -> None:
    texts = layouts().map(lambda example: example[1])
    check_chunking_strategy(JsonChunking(), texts=texts, max_examples=300, require_coverage=False)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_every_value_at_the_path_is_released_once_with_its_path_and_parsed_value(data: st.DataObject) -> None:
    document, text = data.draw(layouts())
    pattern = data.draw(st.one_of(st.none(), patterns(document)))
    strategy = JsonChunking(None if pattern is None else format_path(pattern))
    deltas = data.draw(slicings(text))
    check_laws(strategy, text, deltas, require_coverage=False)
    chunks = run(strategy, deltas)
    expected = places(document, pattern)
    assert [(c.path, c.value) for c in chunks] == expected
    for c in chunks:
        assert json.loads(c) == c.value  # the chunk is the value's raw text
        assert text[c.start : c.end] == c
    # Chunks and their gaps re-assemble the text up to the last chunk.
    assert "".join(c.gap + c for c in chunks) == text[: chunks[-1].end if chunks else 0]


@given(st.data())
def test_offsets_continue_from_start_offset(data: st.DataObject) -> None:
    _, text = data.draw(layouts())
    deltas = data.draw(slicings(text))
    plain = run(JsonChunking(), [text])
    shifted = run(JsonChunking(), deltas, start_offset=1000)
    assert [(c, c.start + 1000, c.end + 1000) for c in plain] == [(c, c.start, c.end) for c in shifted]


def test_the_default_records() -> None:
    assert [(c.path, c.value) for c in run(JsonChunking(), ['[1, {"a": null}, "x"]'])] == [
        ("$[0]", 1),
        ("$[1]", {"a": None}),
        ("$[2]", "x"),
    ]
    text = '{"title": "t", "items": [{"n": 1}, {"n": 2}], "more": [3], "done": true}'
    assert [(c.path, c.value) for c in run(JsonChunking(), [text])] == [
        ("$.title", "t"),
        ("$.items[0]", {"n": 1}),
        ("$.items[1]", {"n": 2}),
        ("$.more", [3]),
        ("$.done", True),
    ]


def test_json_null_is_value_none_with_a_path_and_text_chunks_have_neither() -> None:
    (null,) = run(JsonChunking("$.a"), ['{"a": null}'])
    assert null == "null" and null.value is None and null.path == "$.a"
    (sentence,) = Chunker(SentenceChunking()).feed("Hi. ")
    assert sentence.path is None and sentence.value is None


def test_a_value_is_released_by_the_delta_that_completes_it() -> None:
    chunker = Chunker(JsonChunking("$.items[*].price"))
    assert chunker.feed('{"items": [{"price": 12') == []  # the number may go on
    (price,) = chunker.feed("}")
    assert (price, price.path, price.value) == ("12", "$.items[0].price", 12)
    assert chunker.feed(', {"price": "9') == []
    assert [(c, c.value) for c in chunker.feed('"}]}')] == [('"9"', "9")]
    assert chunker.flush() == []


@pytest.mark.parametrize("clone", [copy.copy, copy.deepcopy, lambda c: pickle.loads(pickle.dumps(c))])
def test_a_structured_chunk_keeps_its_path_and_value_when_copied(clone: Any) -> None:
    (chunk,) = run(JsonChunking(), ['[{"a": [1, 2]}]'])
    copied = clone(chunk)
    assert (copied, copied.chunk_index, copied.start, copied.end, copied.gap, copied.path, copied.value) == (
        chunk,
        0,
        1,
        14,
        "[",
        "$[0]",
        {"a": [1, 2]},
    )
    plain = clone(Chunk("x", 0, 0, 1))
    assert plain.path is None and "path" not in plain.__dict__


def test_the_alias_and_the_repr() -> None:
    assert isinstance(resolve_chunking_strategy("json"), JsonChunking)
    assert repr(JsonChunking("$.a[*]")) == "JsonChunking(path='$.a[*]')"


# -- text that is not JSON ------------------------------------------------------

_NOT_JSON = [
    ('{"a": 1, oops}', 9, "a field name in double quotes"),
    ("[1, 2 3]", 6, "',' or ']'"),
    ('{"a" 1}', 5, "':' after the field name"),
    ('{"a": tru}', 6, "a JSON value"),
    ("[01]", 1, "a JSON value"),
    ('{"a": [1, }', 10, "a JSON value"),
    ("[NaN]", 1, "a JSON value or ']'"),
    ('Sure: [1, {"x": "bad \\q escape"}]', 21, "a JSON value"),
]


@pytest.mark.parametrize(("text", "offset", "expected"), _NOT_JSON)
@given(data=st.data())
def test_text_that_is_not_json_fails_at_its_offset_whatever_the_slicing(
    data: st.DataObject, text: str, offset: int, expected: str
) -> None:
    deltas = data.draw(slicings(text))
    with pytest.raises(JsonChunkingError) as info:
        run(JsonChunking(), deltas)
    assert (info.value.offset, info.value.expected) == (offset, expected)
    assert f"offset {offset}" in str(info.value)


def test_bad_text_fails_as_soon_as_it_is_read_after_the_records_before_it() -> None:
    chunker = Chunker(JsonChunking())
    assert chunker.feed('[{"n": 1}, ') == ['{"n": 1}']
    with pytest.raises(JsonChunkingError, match=r"offset 11: expected a JSON value, found 'I cannot"):
        chunker.feed("I cannot continue")


@pytest.mark.parametrize(
    ("text", "offset", "message"),
    [
        ("I'd rather not.", 15, "expected a JSON object or array, the output ended"),
        ('{"items": [{"n": 1}, {"n"', 25, r"inside \$.items\[1\].n: the document is not complete"),
        ("", 0, "the output ended"),
    ],
)
def test_an_output_without_a_whole_document_fails_at_the_end(text: str, offset: int, message: str) -> None:
    chunker = Chunker(JsonChunking())
    chunker.feed(text)
    with pytest.raises(JsonChunkingError, match=message) as info:
        chunker.flush()
    assert info.value.offset == offset


# -- linear ---------------------------------------------------------------------


def test_the_scanner_keeps_only_the_value_it_is_inside() -> None:
    # Linear time: each character is read once and the scanner's buffer never holds more
    # than the record being read, however long the document.
    records = [{"name": f"item {i}", "tags": ["a", "b"], "price": i * 1.5} for i in range(2000)]
    text = json.dumps({"items": records})
    chunker = Chunker(JsonChunking())
    scanner = chunker._scanner
    longest = max(len(json.dumps(r)) for r in records)
    released = 0
    for i in range(0, len(text), 4):
        released += len(chunker.feed(text[i : i + 4]))
        assert len(scanner._text) <= longest + 4  # type: ignore[union-attr]
        assert len(chunker.pending) <= longest + 8
    assert released + len(chunker.flush()) == 2000


# -- paths ------------------------------------------------------------------------


@given(st.lists(st.one_of(_KEYS, st.integers(0, 99), st.sampled_from([ANY_INDEX, ANY_FIELD])), max_size=5))
def test_paths_round_trip(steps: list[Step]) -> None:
    assert parse_path(format_path(steps)) == tuple(steps)


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        (3, TypeError, "path must be a str"),
        ("products[*]", ValueError, "must start with '\\$'"),
        ("$.a[-1]", ValueError, "at offset 3"),
        ("$..a", ValueError, "at offset 1"),
        ("$.a[?(@.x)]", ValueError, "the steps allowed are"),
    ],
)
def test_a_path_outside_the_subset_is_refused_naming_where(path: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        JsonChunking(path)


# -- in a run ---------------------------------------------------------------------

PRODUCTS = [{"name": f"p{i}", "price": 10 - i} for i in range(6)]
DOCUMENT = "```json\n" + json.dumps({"products": PRODUCTS}) + "\n```"


class PricesArePositive(Requirement):
    """Reads the value the chunk carries: no second parse."""

    def __init__(self, bad_name: str | None = None) -> None:
        super().__init__("prices are positive")
        self.bad_name = bad_name
        self.seen: list[tuple[str | None, Any]] = []

    async def stream_validate(self, chunk: Any, *, backend: Any, ctx: Any) -> PartialValidationResult:
        self.seen.append((chunk.path, chunk.value))
        if chunk.value["name"] == self.bad_name:
            return PartialValidationResult("fail", reason=f"{chunk.path} is bad")
        return PartialValidationResult("pass" if chunk.value["price"] > 0 else "fail")


@pytest.mark.asyncio
async def test_a_run_with_json_chunking_delivers_each_record_with_its_path_and_value() -> None:
    deltas = [DOCUMENT[i : i + 4] for i in range(0, len(DOCUMENT), 4)]
    check = PricesArePositive()
    result = await stream_with_chunking(
        "list", ScriptedBackend(deltas), SimpleContext(), chunking="json", requirements=[check]
    )
    events = [e async for e in result.events()]
    chunks = [e for e in events if isinstance(e, ChunkEvent)]
    assert [(e.path, e.value) for e in chunks] == [(f"$.products[{i}]", p) for i, p in enumerate(PRODUCTS)]
    assert [e.text for e in chunks] == [json.dumps(p) for p in PRODUCTS]
    assert result.full_text == DOCUMENT and result.completed
    # The check ran on a copy, which shares the list: it read each record's path and value.
    assert check.seen == [(e.path, e.value) for e in chunks]


@pytest.mark.asyncio
async def test_a_failing_record_stops_the_generation_and_is_never_delivered() -> None:
    deltas = [DOCUMENT[i : i + 4] for i in range(0, len(DOCUMENT), 4)]
    backend = ScriptedBackend(deltas, delay=0.001)
    result = await stream_with_chunking(
        "list", backend, SimpleContext(), chunking="json", requirements=[PricesArePositive(bad_name="p2")]
    )
    events = [e async for e in result.events()]
    assert [e.path for e in events if isinstance(e, ChunkEvent)] == ["$.products[0]", "$.products[1]"]
    assert not result.completed
    # Stopped in the check's own step: the text received ends within a delta of p2's end.
    p2_end = DOCUMENT.index('"p2"') + len('"p2", "price": 8}')
    assert len(result.full_text) <= p2_end


@pytest.mark.asyncio
async def test_text_that_is_not_json_fails_the_run_naming_the_offset() -> None:
    text = '[{"n": 1}, {"n": 2}, I give up'
    result = await stream_with_chunking(
        "list",
        ScriptedBackend([text[i : i + 3] for i in range(0, len(text), 3)]),
        SimpleContext(),
        chunking="json",
    )
    events = [e async for e in result.events()]
    assert [e.value for e in events if isinstance(e, ChunkEvent)] == [{"n": 1}, {"n": 2}]
    (error,) = [e for e in events if isinstance(e, ErrorEvent)]
    assert error.exception_type == "JsonChunkingError" and "offset 21" in error.detail
