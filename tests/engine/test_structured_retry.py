"""In-stream retry of structured output: a failing item is never delivered, and a retry asks
for the items after the delivered ones in a new document, whose items are spliced after them.

The consumer's view is append-only: delivered items are delivered once, the new items'
paths and chunk indices continue the delivered ones, ``full_text`` is one JSON document
(the delivered items, then the new ones), ``parsed`` is its typed value, and the partial
object grows across the retry. Every attempt is sent the run's schema.
"""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest

from backends.ollama import OllamaBackend
from backends.openai import OpenAIBackend
from backends.scripted import ScriptedBackend
from engine import (
    FieldCheck,
    Instruction,
    PartialValidationResult,
    Requirement,
    SimpleContext,
    StreamRetry,
    ValidationResult,
    stream_with_chunking,
)
from engine.core import typed_output
from engine.core.continuation import JsonContinuation
from engine.core.events import ChunkEvent, ErrorEvent, PartialObjectEvent, RetryEvent, StreamEvent
from tests.fake_servers import FakeOllamaServer, FakeOpenAIServer, Reply


class Product(pydantic.BaseModel):
    name: str
    price: float
    currency: str


class ProductList(pydantic.BaseModel):
    products: list[Product]


def products(prefix: str, n: int, **changes: dict[str, Any]) -> list[dict[str, Any]]:
    """*n* products named ``{prefix}{i}``; ``changes={"3": {"currency": "GBP"}}`` edits item 3."""
    items = [{"name": f"{prefix}{i}", "price": 1.0 + i, "currency": "EUR"} for i in range(n)]
    for index, change in changes.items():
        items[int(index)].update(change)
    return items


def sliced(text: str, size: int = 4) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


class Chunks(Requirement):
    """Records every chunk it is given (its index, offsets, text and path); passes. The list
    is shared with the copy the run makes."""

    def __init__(self) -> None:
        super().__init__("records chunks")
        self.seen: list[tuple[int, int, int, str, str | None]] = []

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        c: Any = chunk
        self.seen.append((c.chunk_index, c.start, c.end, str(c), c.path))
        return PartialValidationResult("pass")


def the_example_requirements() -> list[Requirement]:
    return [
        FieldCheck("$.products[*]", lambda p: p["price"] > 0, "prices are positive"),
        FieldCheck("$.products[*].currency", lambda c: c in {"EUR", "USD"}),
    ]


FIRST = products("p", 40, **{"17": {"currency": "GBP"}})  # item 17 fails
SECOND = products("q", 23)  # the items after the 17 delivered ones
SPLICED = FIRST[:17] + SECOND


async def run_the_example(backend: Any, recorder: Chunks | None = None) -> tuple[Any, list[StreamEvent]]:
    result = await stream_with_chunking(
        Instruction("List 40 products as JSON: name, price, currency."),
        backend,
        SimpleContext(),
        format=ProductList,
        chunking="json",
        requirements=[*the_example_requirements(), *([recorder] if recorder else [])],
        retry=StreamRetry(max_attempts=2),
    )
    return result, [e async for e in result.events()]


def assert_spliced(result: Any, events: list[StreamEvent], items: list[dict[str, Any]]) -> None:
    """The run delivered *items* once each, in order, with continuous paths and indices."""
    chunks = [e for e in events if isinstance(e, ChunkEvent)]
    assert [(e.path, e.chunk_index, e.value) for e in chunks] == [
        (f"$.products[{i}]", i, item) for i, item in enumerate(items)
    ]
    assert [e.attempt for e in chunks] == [1] * 17 + [2] * (len(items) - 17)
    assert all(e.value["currency"] != "GBP" for e in chunks)  # the failing item never delivered
    # The partial object grows item by item across the retry, never shrinks.
    partials = [e.partial.products for e in events if isinstance(e, PartialObjectEvent)]
    assert partials == [[Product(**p) for p in items[: i + 1]] for i in range(len(items))]
    assert result.completed and result.attempts_used == 2
    assert json.loads(result.full_text) == {"products": items}
    assert result.parsed == ProductList(products=[Product(**p) for p in items])
    assert result.partial == result.parsed
    assert [e.attempt for e in events if isinstance(e, RetryEvent)] == [2]


def retry_prompt_asks_for_the_items_from_17(prompt: str) -> None:
    assert "The first 17 items of $.products (indices 0 to 16) were accepted and kept" in prompt
    assert "only the items from index 17 on" in prompt
    assert "$.products[17].currency failed" in prompt  # the reason
    assert json.dumps(FIRST[17]) in prompt  # the rejected item


# -- the example: the scripted backend and both fake servers --------------------------------


@pytest.mark.asyncio
async def test_the_example_with_a_retry_splices_the_new_documents_items_after_the_delivered_ones() -> None:
    recorder = Chunks()
    first = json.dumps({"products": FIRST})
    backend = ScriptedBackend(
        sliced(first), delay=0.001, continuations=[sliced(json.dumps({"products": SECOND}))]
    )
    result, events = await run_the_example(backend, recorder)
    assert_spliced(result, events, SPLICED)
    # The currency check stopped attempt 1 in its own step: within the delta in flight when
    # item 17's currency closed, before the rest of the item arrived.
    closes = first.index('"GBP"') + len('"GBP"')
    assert closes <= len(result.mots[0].text) < closes + 4
    retry_prompt_asks_for_the_items_from_17(backend.generations[1].extra["repair"])
    # Chunk offsets are positions in full_text, across the retry too.
    delivered = {(e.chunk_index, e.text) for e in events if isinstance(e, ChunkEvent)}
    placed = [seen for seen in recorder.seen if (seen[0], seen[3]) in delivered]
    assert len(placed) == len(SPLICED)
    for _, start, end, text, _ in placed:
        assert result.full_text[start:end] == text


@pytest.mark.asyncio
async def test_the_example_against_the_ollama_server_which_gets_the_schema_on_the_retry_too() -> None:
    first = Reply(deltas=sliced(json.dumps({"products": FIRST})), delay=0.001)
    # A model's habits around the new document: prose, a code fence, indentation.
    second = Reply(
        deltas=sliced("Here you go:\n```json\n" + json.dumps({"products": SECOND}, indent=2) + "\n```")
    )
    async with FakeOllamaServer(first) as server:
        server.enqueue(first, second)
        async with OllamaBackend("m", base_url=server.url) as backend:
            result, events = await run_the_example(backend)
        await server.requests[0].wait_disconnected(within=2.0)  # the failing attempt's connection closed
    assert len(server.requests) == 2
    schema = typed_output.json_schema(ProductList)
    assert [r.body["format"] for r in server.requests] == [schema, schema]
    messages = server.requests[1].body["messages"]
    assert [m["role"] for m in messages] == ["user"]  # a new document: no partial answer to continue
    assert messages[0]["content"].startswith("List 40 products as JSON")
    retry_prompt_asks_for_the_items_from_17(messages[0]["content"])
    assert_spliced(result, events, SPLICED)


@pytest.mark.asyncio
async def test_the_example_against_the_openai_server_which_gets_the_schema_on_the_retry_too() -> None:
    first = Reply(deltas=sliced(json.dumps({"products": FIRST})), delay=0.001)
    second = Reply(deltas=sliced(json.dumps({"products": SECOND})))
    async with FakeOpenAIServer(first) as server:
        server.enqueue(first, second)
        async with OpenAIBackend("m", base_url=server.url) as backend:
            result, events = await run_the_example(backend)
        await server.requests[0].wait_disconnected(within=2.0)
    assert len(server.requests) == 2
    schema = typed_output.json_schema(ProductList)
    for request in server.requests:
        assert request.body["response_format"]["type"] == "json_schema"
        assert request.body["response_format"]["json_schema"]["schema"] == schema
    retry = server.requests[1].body
    assert "continue_final_message" not in retry  # nothing to continue: a new document
    assert [m["role"] for m in retry["messages"]] == ["user"]
    retry_prompt_asks_for_the_items_from_17(retry["messages"][0]["content"])
    assert_spliced(result, events, SPLICED)


@pytest.mark.asyncio
async def test_a_text_retry_sends_the_format_again() -> None:
    # With text chunking too, the retry's request carries the run's schema.
    class Note(pydantic.BaseModel):
        text: str

    class Loud(Requirement):
        async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
            return PartialValidationResult("fail" if "LOUD" in chunk else "pass")

        async def validate(self, backend: Any, ctx: Any, **kwargs: Any) -> ValidationResult:
            return ValidationResult(True)  # no judge model: the server sees the generations only

    first = Reply(deltas=['{"text": "Fine. ', "LOUD. ", 'more."}'], delay=0.02)
    async with FakeOllamaServer(first) as server:
        server.enqueue(first, Reply(deltas=[' Calm."}']))
        async with OllamaBackend("m", base_url=server.url) as backend:
            result = await stream_with_chunking(
                "Say things.",
                backend,
                SimpleContext(),
                requirements=[Loud("no shouting")],
                format=Note,
                retry=StreamRetry(max_attempts=2),
            )
            await result.acomplete()
    assert result.parsed == Note(text="Fine. Calm.") and result.attempts_used == 2
    schema = typed_output.json_schema(Note)
    assert [r.body.get("format") for r in server.requests] == [schema, schema]


# -- attempts, reasons, what cannot be spliced ---------------------------------------------


@pytest.mark.asyncio
async def test_a_failure_in_the_new_document_is_retried_again_with_paths_that_go_on() -> None:
    second = products("q", 5, **{"2": {"currency": "JPY"}})  # fails as item 19 of the run
    third = products("r", 3)
    backend = ScriptedBackend(
        sliced(json.dumps({"products": FIRST})),
        continuations=[sliced(json.dumps({"products": second})), sliced(json.dumps({"products": third}))],
    )
    result = await stream_with_chunking(
        "List products.",
        backend,
        SimpleContext(),
        format=ProductList,
        chunking="json",
        requirements=the_example_requirements(),
        retry=StreamRetry(max_attempts=3),
    )
    events = [e async for e in result.events()]
    items = FIRST[:17] + second[:2] + third
    assert [(e.path, e.value) for e in events if isinstance(e, ChunkEvent)] == [
        (f"$.products[{i}]", item) for i, item in enumerate(items)
    ]
    reasons = [e.reason for e in events if isinstance(e, RetryEvent)]
    assert "$.products[17].currency failed" in reasons[0]
    assert "$.products[19].currency failed" in reasons[1]  # the check judged the new items, re-indexed
    assert "The first 19 items of $.products" in backend.generations[2].extra["repair"]
    assert json.loads(result.full_text) == {"products": items} and result.completed


@pytest.mark.asyncio
async def test_once_the_attempts_are_spent_the_run_fails_and_the_failing_item_is_never_delivered() -> None:
    second = products("q", 5, **{"1": {"currency": "JPY"}})
    backend = ScriptedBackend(
        sliced(json.dumps({"products": FIRST})), continuations=[sliced(json.dumps({"products": second}))]
    )
    result, events = await run_the_example(backend)
    delivered = [e.value for e in events if isinstance(e, ChunkEvent)]
    assert delivered == FIRST[:17] + second[:1]
    assert not result.completed and result.parsed is None
    (failure,) = result.streaming_failures
    assert failure[1].reason.startswith("$.products[18].currency failed")
    # The delivered text: up to the last delivered item, the new one spliced after the old.
    assert result.full_text.endswith(json.dumps(FIRST[16]) + "," + json.dumps(second[0]))


@pytest.mark.asyncio
async def test_when_nothing_was_delivered_the_new_document_replaces_the_answer() -> None:
    first = products("p", 3, **{"0": {"currency": "GBP"}})
    second = "Sure:\n" + json.dumps({"products": products("q", 2)})
    backend = ScriptedBackend(sliced(json.dumps({"products": first})), continuations=[sliced(second)])
    result, events = await run_the_example(backend)
    assert [(e.path, e.value["name"]) for e in events if isinstance(e, ChunkEvent)] == [
        ("$.products[0]", "q0"),
        ("$.products[1]", "q1"),
    ]
    assert result.full_text == second and result.completed
    assert result.parsed == ProductList(products=[Product(**p) for p in products("q", 2)])
    prompt = backend.generations[1].extra["repair"]
    assert "Write a new JSON document of the same shape" in prompt and "index" not in prompt


@pytest.mark.asyncio
async def test_a_list_format_splices_whether_or_not_the_new_document_is_wrapped() -> None:
    first = {"result": products("p", 4, **{"2": {"currency": "GBP"}})}
    for second in (products("q", 2), {"result": products("q", 2)}):
        backend = ScriptedBackend(
            sliced(json.dumps(first)), continuations=[sliced(json.dumps(second) + " ok?")]
        )
        result = await stream_with_chunking(
            "List products.",
            backend,
            SimpleContext(),
            format=list[Product],
            chunking="json",
            requirements=[FieldCheck("$[*].currency", lambda c: c == "EUR")],
            retry=StreamRetry(max_attempts=2),
        )
        events = [e async for e in result.events()]
        items = first["result"][:2] + products("q", 2)
        assert [(e.path, e.value) for e in events if isinstance(e, ChunkEvent)] == [
            (f"$[{i}]", item) for i, item in enumerate(items)
        ]
        assert json.loads(result.full_text) == {"result": items}
        assert result.parsed == [Product(**p) for p in items]


@pytest.mark.asyncio
async def test_a_document_that_cannot_be_spliced_there_is_not_retried() -> None:
    # The records are the top-level fields: the delivered text ends after a field, where a
    # new document's items cannot follow. The failure ends the run as one not retryable.
    class Card(pydantic.BaseModel):
        name: str
        price: float

    backend = ScriptedBackend(sliced(json.dumps({"name": "kettle", "price": -1})), continuations=[["{}"]])
    result = await stream_with_chunking(
        "A card.",
        backend,
        SimpleContext(),
        format=Card,
        chunking="json",
        requirements=[FieldCheck("$.price", lambda p: p > 0)],
        retry=StreamRetry(max_attempts=3),
    )
    events = [e async for e in result.events()]
    assert [e.path for e in events if isinstance(e, ChunkEvent)] == ["$.name"]
    assert not any(isinstance(e, RetryEvent) for e in events)
    assert len(backend.generations) == 1 and not result.completed
    assert result.streaming_failures[0][1].reason.startswith("$.price failed")


@pytest.mark.asyncio
async def test_a_new_document_without_the_array_fails_the_run_naming_what_was_expected() -> None:
    backend = ScriptedBackend(sliced(json.dumps({"products": FIRST})), continuations=[['{"items": []}']])
    result, events = await run_the_example(backend)
    assert [e.path for e in events if isinstance(e, ChunkEvent)] == [f"$.products[{i}]" for i in range(17)]
    assert not result.completed
    (error,) = [e for e in events if isinstance(e, ErrorEvent)]
    assert error.exception_type == "JsonChunkingError"
    assert "expected an array at $.products" in error.detail and "new document" in error.detail


@pytest.mark.asyncio
async def test_retry_with_a_field_check_needs_json_chunking_for_the_run() -> None:
    backend = ScriptedBackend(["{}"])
    with pytest.raises(ValueError, match="needs chunking='json' for the run"):
        await stream_with_chunking(
            "x",
            backend,
            SimpleContext(),
            requirements=[FieldCheck("$.a", lambda a: True)],
            chunking="sentence",
            retry=StreamRetry(max_attempts=2),
        )
    assert backend.generations == []


def test_the_json_retry_is_a_user_turn_with_the_instruction_for_any_backend() -> None:
    turn = JsonContinuation(Instruction("List products."), "Go on from index 3.", attempt=2)
    assert turn.format_for_llm() == "List products.\n\nGo on from index 3."
