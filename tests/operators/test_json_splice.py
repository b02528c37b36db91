"""Splicing a retry's new JSON document after the delivered items (``operators.chunking.json_splice``),
and the resumed chunker that reads the spliced text as one document."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.chunking import Chunker, JsonChunking, JsonChunkingError
from operators.chunking.json_splice import JsonSplice, ResumePoint, resume_point

scalars = st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), st.text(max_size=6))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def sliced(draw: st.DrawFn, text: str) -> list[str]:
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(text) - 1)), max_size=min(len(text), 30))))
    bounds = [0, *[c for c in cuts if c < len(text)], len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def delivered_text(document: str, kept: int, strategy: JsonChunking) -> str:
    """*document* up to the end of its *kept*-th record."""
    chunks = Chunker(strategy).feed(document)
    return document[: chunks[kept - 1].end]


def spliced(strategy: JsonChunking, point: ResumePoint, deltas: list[str]) -> str:
    splice = JsonSplice(strategy, point)
    out = "".join(splice.feed(d) for d in deltas) + splice.finish()
    assert splice.text == out
    return out


@settings(max_examples=200, deadline=None)
@given(
    first=st.lists(values, min_size=1, max_size=5),
    second=st.lists(values, max_size=5),
    data=st.data(),
)
def test_the_new_documents_items_follow_the_delivered_ones_in_one_document(
    first: list[Any], second: list[Any], data: st.DataObject
) -> None:
    wrapped = data.draw(st.booleans())
    strategy = JsonChunking("$[*]", wrapper="result") if wrapped else JsonChunking("$.items[*]")
    first_value: Any = {"result": first} if wrapped and data.draw(st.booleans()) else first
    if not wrapped:
        first_value = {"before": 1, "items": first, "after": [2]}
    second_value: Any = {"result": second} if wrapped and data.draw(st.booleans()) else second
    if not wrapped:
        second_value = {"other": "x", "items": second, "after": [3]}
    kept = data.draw(st.integers(1, len(first)))
    indent = data.draw(st.sampled_from([None, 2]))
    delivered = delivered_text(json.dumps(first_value, indent=indent), kept, strategy)
    new_document = (
        data.draw(st.sampled_from(["", "Sure: ", "```json\n"])) + json.dumps(second_value) + " ``` "
    )
    point = resume_point(strategy, delivered)
    assert point is not None and point.kept == kept and point.array == ("$" if wrapped else "$.items")
    text = delivered + spliced(strategy, point, data.draw(sliced(new_document)))
    # One document (no text after it), and the new items follow the kept ones.
    whole = json.loads(text)
    items = whole["result"] if isinstance(whole, dict) and wrapped else whole if wrapped else whole["items"]
    assert items == first[:kept] + second
    if not wrapped:
        assert whole["before"] == 1 and whole["after"] == [3]  # the rest comes from the new document
    # Read by a chunker that resumed after the delivered text: paths and indices go on.
    chunker = Chunker(strategy, start_index=kept)
    chunker.resume(delivered)
    chunks = chunker.feed(text[len(delivered) :]) + chunker.flush()
    prefix = "$" if wrapped else "$.items"
    assert [(c.path, c.chunk_index, c.value) for c in chunks] == [
        (f"{prefix}[{kept + i}]", kept + i, item) for i, item in enumerate(second)
    ]
    for c in chunks:
        assert text[c.start : c.end] == c


def test_a_number_at_the_end_of_the_delivered_text_is_not_released_again() -> None:
    chunker = Chunker(JsonChunking("$[*]"), start_index=2)
    chunker.resume("[1, 22")  # the delivered text ends where the number 22 ended
    chunks = chunker.feed(",3]") + chunker.flush()
    assert [(c.chunk_index, c.path, c.value, c.start) for c in chunks] == [(2, "$[2]", 3, 7)]


@pytest.mark.parametrize(
    ("delivered", "path"),
    [
        ('{"name": "kettle"', "$.*"),  # after a field
        ('{"a": [{"b": [1, 2]', "$.a[*].b[*]"),  # an array inside an array
        ('{"items": [{"x": 1', "$.items[*].x"),  # inside an item
        ("", "$[*]"),  # before the document
        ('{"items": [1]}', "$.items[*]"),  # after it
    ],
)
def test_where_no_new_document_can_be_spliced(delivered: str, path: str) -> None:
    assert resume_point(JsonChunking(path), delivered) is None


def test_a_new_document_without_the_array_says_so() -> None:
    strategy = JsonChunking("$.items[*]")
    point = resume_point(strategy, '{"items": [1')
    assert point == ResumePoint("$.items", 1, "}")
    splice = JsonSplice(strategy, point)
    assert splice.feed('{"others": [2]}') == ""
    with pytest.raises(JsonChunkingError, match=r"expected an array at \$\.items.*new document"):
        splice.finish()
    splice = JsonSplice(strategy, point)
    with pytest.raises(JsonChunkingError, match=r"expected an array at \$\.items, found '\{\}\}'"):
        splice.feed('{"items": {}}')
    splice = JsonSplice(strategy, point)
    with pytest.raises(JsonChunkingError, match="in the retry's new document"):
        splice.feed('{"items" 3')
