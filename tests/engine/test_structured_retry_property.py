"""Structured retries, property-tested: whatever the records, the failing ones, the slicing of
each attempt's document into deltas and what the model writes around it (prose, a code
fence, indentation, a wrapped or bare list), the run delivers exactly the valid items of
attempt 1 up to its first failing one, then those of each new document up to its own
first failing one; never a failing item, never one twice; and its ``full_text`` is one
JSON document holding the delivered items and nothing else. And the delivery invariant
(no text delivered before every requirement judged it) holds with JSON chunking and
retries as with text chunking.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import pydantic
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from backends import ScriptedBackend
from engine import FieldCheck, SimpleContext, StreamRetry, stream_with_chunking
from engine.core.events import ChunkEvent, CompletedEvent, PartialObjectEvent, RetryEvent
from operators.chunking import Chunker, JsonChunking
from tests.engine.test_judged_delivery_property import _FIRST_LETTER, check_invariant, run_scenario


class Item(pydantic.BaseModel):
    id: int
    ok: bool
    tag: str


class Items(pydantic.BaseModel):
    items: list[Item]


TAGS = ["a", "b c", 'q"uote', "back\\slash", "{[brackets]}", "ünï", ""]


@st.composite
def documents(
    draw: st.DrawFn, wrapped: bool, ids: list[int], fails: bool
) -> tuple[list[dict[str, Any]], str]:
    """A document's records (ids from *ids*, never reused; one failing at least when *fails*)
    and its text as a model writes it."""
    items = []
    for _ in range(draw(st.integers(0, 6))):
        ids[0] += 1
        items.append(
            {
                "id": ids[0],
                "ok": draw(st.sampled_from([True] * 5 + [False])),
                "tag": draw(st.sampled_from(TAGS)),
            }
        )
    if fails:
        ids[0] += 1
        bad = {"id": ids[0], "ok": False, "tag": draw(st.sampled_from(TAGS))}
        items.insert(draw(st.integers(0, len(items))), bad)
    value: Any = ({"result": items} if draw(st.booleans()) else items) if wrapped else {"items": items}
    text = json.dumps(
        value, indent=draw(st.sampled_from([None, None, 1, 2])), ensure_ascii=draw(st.booleans())
    )
    if draw(st.booleans()):
        text = draw(st.sampled_from(["", "Sure:\n", "Here you go. "])) + "```json\n" + text + "\n```"
    elif draw(st.booleans()):
        text = "Sure: " + text
    return items, text


@st.composite
def sliced(draw: st.DrawFn, text: str) -> list[str]:
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(text) - 1)), max_size=min(len(text), 40))))
    bounds = [0, *[c for c in cuts if c < len(text)], len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    wrapped = draw(st.booleans())
    ids = [0]
    n = draw(st.integers(1, 3))
    # The documents before the last mostly fail somewhere: a retry follows them.
    docs = [
        draw(documents(wrapped, ids, i < n - 1 and draw(st.booleans() | st.just(True)))) for i in range(n)
    ]
    return {
        "wrapped": wrapped,
        "docs": [items for items, _ in docs],
        "texts": [text for _, text in docs],
        "deltas": [draw(sliced(text)) for _, text in docs],
        "max_attempts": draw(st.sampled_from([n] * 3 + list(range(1, n)))),
        "check_on": draw(st.sampled_from(["field", "item"])),
    }


def expected(scenario: dict[str, Any]) -> tuple[list[dict[str, Any]], bool, int, int, bool]:
    """The items a run delivers, whether it completes, how many attempts it takes, the attempt
    (from 0) whose document full_text begins with (the last that began with nothing delivered)
    and whether the last attempt's items were spliced after delivered ones."""
    delivered: list[dict[str, Any]] = []
    base, spliced = 0, False
    for attempt, items in enumerate(scenario["docs"][: scenario["max_attempts"]]):
        if delivered:
            spliced = True
        else:
            base, spliced = attempt, False
        bad = next((i for i, item in enumerate(items) if not item["ok"]), None)
        delivered += items if bad is None else items[:bad]
        if bad is None:
            return delivered, True, attempt + 1, base, spliced
    return delivered, False, scenario["max_attempts"], base, spliced


async def run(scenario: dict[str, Any]) -> tuple[Any, list[Any]]:
    records = "$[*]" if scenario["wrapped"] else "$.items[*]"
    check = (
        FieldCheck(records + ".ok", lambda ok: ok or "not ok")
        if scenario["check_on"] == "field"
        else FieldCheck(records, lambda item: item["ok"] or "not ok")
    )
    backend = ScriptedBackend(scenario["deltas"][0], continuations=scenario["deltas"][1:])
    result = await stream_with_chunking(
        "List items.",
        backend,
        SimpleContext(),
        format=list[Item] if scenario["wrapped"] else Items,
        chunking="json",
        requirements=[check],
        retry=StreamRetry(max_attempts=scenario["max_attempts"]),
    )
    events = await asyncio.wait_for(asyncio.ensure_future(_collect(result)), 10)
    return result, events


async def _collect(result: Any) -> list[Any]:
    return [e async for e in result.events()]


def the_document(text: str) -> tuple[Any, int, int]:
    """The JSON document in *text* (after any prose), where it starts and where it ends."""
    start = min(i for i in (text.find("{"), text.find("[")) if i >= 0)
    value, end = json.JSONDecoder().raw_decode(text, start)
    return value, start, end


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios())
def test_the_delivered_items_are_the_valid_prefix_of_each_attempt_spliced_once(
    scenario: dict[str, Any],
) -> None:
    result, events = asyncio.run(run(scenario))
    items, completed, attempts, base, spliced = expected(scenario)
    event(f"attempts={attempts} spliced={spliced} completed={completed}")
    prefix = "$" if scenario["wrapped"] else "$.items"
    chunks = [e for e in events if isinstance(e, ChunkEvent)]
    # Exactly the valid prefix of each attempt, in order, once each, never a failing one.
    assert [(e.path, e.chunk_index, e.value) for e in chunks] == [
        (f"{prefix}[{i}]", i, item) for i, item in enumerate(items)
    ]
    assert all(e.value["ok"] for e in chunks)
    assert len({e.value["id"] for e in chunks}) == len(chunks)
    assert result.completed == completed and result.attempts_used == attempts
    assert sum(isinstance(e, RetryEvent) for e in events) == attempts - 1
    # The partial object grows item by item, across the retries.
    partials = [e.partial for e in events if isinstance(e, PartialObjectEvent)]
    typed = [Item(**item) for item in items]
    assert [p if scenario["wrapped"] else p.items for p in partials] == [
        typed[: i + 1] for i in range(len(items))
    ]

    # full_text, read afresh by JSON chunking, holds the delivered items and nothing else.
    full = result.full_text
    chunker = Chunker(JsonChunking(f"{prefix}[*]", wrapper="result" if scenario["wrapped"] else None))
    read = chunker.feed(full) + (chunker.flush() if completed else [])
    assert [c.value for c in read] == items
    if not completed:
        assert result.parsed is None
        return
    value, start, end = the_document(full)
    assert (value["result"] if isinstance(value, dict) and scenario["wrapped"] else value) == (
        items if scenario["wrapped"] else {"items": items}
    )
    assert result.parsed == (typed if scenario["wrapped"] else Items(items=typed))
    if spliced:
        # One document: the prose before the document it began with, nothing after it.
        assert end == len(full)
        assert full[:start] == scenario["texts"][base][:start]
    else:
        assert full == scenario["texts"][base]


# -- the delivery invariant, with JSON chunking and retries ----------------------------------


@st.composite
def lettered_documents(draw: st.DrawFn, counter: list[int]) -> list[str]:
    """The deltas of a document ``{"items": [{"w": "<words>"}, ...]}`` whose every letter is new."""
    items = []
    for _ in range(draw(st.integers(0, 4))):
        words = []
        for _ in range(draw(st.integers(1, 2))):
            n = draw(st.integers(1, 3))
            words.append("".join(chr(_FIRST_LETTER + counter[0] + i) for i in range(n)))
            counter[0] += n
        items.append({"w": " ".join(words)})
    text = json.dumps({"items": items}, ensure_ascii=False, indent=draw(st.sampled_from([None, 1])))
    return draw(sliced(text))


@st.composite
def json_scenarios(draw: st.DrawFn) -> dict[str, Any]:
    counter = [0]
    docs = [draw(lettered_documents(counter)) for _ in range(3)]
    all_letters = [chr(_FIRST_LETTER + i) for i in range(counter[0])] or ["x"]
    owns = [None, None, "word", JsonChunking("$.items[*].w"), JsonChunking("$.items[*]"), JsonChunking("$")]
    specs = [
        {
            "chunking": draw(st.sampled_from(owns)),
            "poison": draw(st.sets(st.sampled_from(all_letters), max_size=2)),
            "doubt": draw(st.sets(st.sampled_from(all_letters), max_size=2)),
            "suspends": draw(st.booleans()),
        }
        for _ in range(draw(st.integers(1, 3)))
    ]
    return {
        "deltas": docs[0],
        "continuations": docs[1:],
        "stream_chunking": "json",
        "retry": draw(st.sampled_from([None, 2, 3])),
        "specs": specs,
    }


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=json_scenarios())
def test_with_json_chunking_and_retries_no_text_is_delivered_before_every_requirement_judged_it(
    scenario: dict[str, Any],
) -> None:
    timeline, reqs = asyncio.run(run_scenario(scenario))
    (completed,) = [e[1] for e in timeline if e[0] == "event" and isinstance(e[1], CompletedEvent)]
    event(f"attempts={completed.attempts_used} success={completed.success}")
    check_invariant(scenario, timeline, reqs)
