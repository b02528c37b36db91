"""The parse shortcuts of the streaming path give what the plain rules give, for any input.

SSEDecoder handles ``data: `` lines and blank lines inline and every other line by the
general rule; the OpenAI parser decodes a chunk with ``JSONDecoder.raw_decode`` and leaves
anything else to ``json.loads``. Both are checked against a plain reading of the rules.
"""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from backends import OpenAIBackend
from backends.errors import MalformedStreamError
from backends.openai import _OpenAIParser
from backends.sse import SSEDecoder
from engine.core.generation import GenerationInfo

VALUE = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=12
)
LINE = st.one_of(
    st.just(""),
    VALUE.map(lambda v: "data: " + v),
    VALUE.map(lambda v: "data:" + v),
    st.just("data"),
    VALUE.map(lambda v: ":" + v),
    VALUE.map(lambda v: "event: " + v),
    VALUE.map(lambda v: "id: " + v),
    VALUE.map(lambda v: v + ": x"),
    VALUE.map(lambda v: "\ufeffdata: " + v),  # a BOM is dropped at the start of the body only
)


def _reference_events(body: bytes) -> list[tuple[str, str]]:
    """(data, event type) of each event, read by the WHATWG rules over the whole body at once."""
    text = body.decode("utf-8", errors="replace").removeprefix("\ufeff")
    events: list[tuple[str, str]] = []
    data: list[str] = []
    kind = ""
    for line in re.split(r"\r\n|\r|\n", text)[:-1]:  # the unterminated rest is discarded
        if not line:
            if data:
                events.append(("\n".join(data), kind or "message"))
            data, kind = [], ""
            continue
        if line.startswith(":"):
            continue
        field, sep, value = line.partition(":")
        value = value[1:] if sep and value.startswith(" ") else value
        if field == "data":
            data.append(value)
        elif field == "event":
            kind = value
    if data:  # complete data lines at the end: dispatched (the decoder's leniency)
        events.append(("\n".join(data), kind or "message"))
    return events


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(LINE, max_size=14),
    eol=st.sampled_from(["\n", "\r\n", "\r"]),
    bom=st.booleans(),
    rest=VALUE,
    cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=8),
)
def test_sse_events_equal_a_plain_reading_of_the_rules_for_any_lines_and_slicing(
    lines: list[str], eol: str, bom: bool, rest: str, cuts: list[int]
) -> None:
    body = (("\ufeff" if bom else "") + "".join(line + eol for line in lines) + rest).encode()
    decoder = SSEDecoder()
    events = []
    start = 0
    for cut in sorted({c for c in cuts if c <= len(body)}):
        events += decoder.feed(body[start:cut])
        start = cut
    events += decoder.feed(body[start:]) + decoder.close()
    assert [(e.data, e.event) for e in events] == _reference_events(body)


JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)


def _parser() -> _OpenAIParser:
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    return _OpenAIParser(backend, "http://127.0.0.1:9/v1/chat/completions", GenerationInfo(), True)


@settings(max_examples=300, deadline=None)
@given(
    content=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8),
    extra=JSON_VALUE,
    before=st.sampled_from(["", " ", "\t", "  "]),
    after=st.sampled_from(["", " ", "\t", "x", "}", "{}", "]", " 1", "\\"]),
)
def test_a_chunk_is_read_exactly_when_json_loads_reads_it(
    content: str, extra: object, before: str, after: str
) -> None:
    chunk = {"choices": [{"index": 0, "delta": {"content": content}}], "x": extra}
    data = before + json.dumps(chunk) + after
    parser = _parser()
    deltas = parser.feed(b"data: " + data.encode() + b"\n\n")
    try:
        json.loads(data[1:] if before.startswith(" ") else data)  # SSE drops one space after "data:"
    except ValueError:
        assert deltas == [] and isinstance(parser.error, MalformedStreamError), (data, deltas)
    else:
        assert parser.error is None and deltas == ([content] if content else []), (data, deltas)
