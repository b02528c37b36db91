"""Structured output validated while it streams: ``format=`` with JSON chunking, checks on
fields and items (``FieldCheck``), partial typed objects, the parsed result, and the
generation stopped at the first bad item (never delivered)."""

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
    Session,
    SimpleContext,
    stream,
    stream_with_chunking,
)
from engine.core import typed_output
from engine.core.components import CBlock
from engine.core.events import ChunkEvent, CompletedEvent, ErrorEvent, PartialObjectEvent, StreamEvent
from engine.core.thunk import ModelOutputThunk
from engine.structured import record_path
from tests.fake_servers import FakeOllamaServer, FakeOpenAIServer, Reply


class Product(pydantic.BaseModel):
    name: str
    price: float
    currency: str


class ProductList(pydantic.BaseModel):
    products: list[Product]


def products(n: int, **changes: dict[str, Any]) -> list[dict[str, Any]]:
    """*n* products; ``changes={"3": {"currency": "GBP"}}`` edits item 3."""
    items = [{"name": f"p{i}", "price": 1.0 + i, "currency": "EUR"} for i in range(n)]
    for index, change in changes.items():
        items[int(index)].update(change)
    return items


def sliced(text: str, size: int = 4) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def example_requirements() -> list[FieldCheck]:
    return [
        FieldCheck("$.products[*]", lambda p: p["price"] > 0, "prices are positive"),
        FieldCheck("$.products[*].currency", lambda c: c in {"EUR", "USD"}),
    ]


async def run_example(backend: Any, **kwargs: Any) -> tuple[Any, list[StreamEvent]]:
    result = await stream_with_chunking(
        Instruction("List 5 products as JSON: name, price, currency."),
        backend,
        SimpleContext(),
        format=ProductList,
        chunking="json",
        requirements=example_requirements(),
        **kwargs,
    )
    return result, [e async for e in result.events()]


def assert_example_delivered(result: Any, events: list[StreamEvent], items: list[dict[str, Any]]) -> None:
    chunks = [e for e in events if isinstance(e, ChunkEvent)]
    assert [(e.path, e.value) for e in chunks] == [(f"$.products[{i}]", p) for i, p in enumerate(items)]
    # Each ChunkEvent is followed by the PartialObjectEvent it caused, typed.
    for i, event in enumerate(chunks):
        partial = events[events.index(event) + 1]
        assert isinstance(partial, PartialObjectEvent) and partial.chunk_index == event.chunk_index
        assert partial.partial.products == [Product(**p) for p in items[: i + 1]]
    assert result.completed
    assert result.parsed == ProductList(products=[Product(**p) for p in items])
    assert result.partial == result.parsed


# -- the example, with the scripted backend and both fake servers --------------------------


@pytest.mark.asyncio
async def test_the_example_runs_with_the_scripted_backend() -> None:
    items = products(5)
    result, events = await run_example(ScriptedBackend(sliced(json.dumps({"products": items}))))
    assert_example_delivered(result, events, items)


@pytest.mark.asyncio
async def test_the_example_runs_against_the_ollama_server_which_gets_the_schema() -> None:
    items = products(5)
    text = "```json\n" + json.dumps({"products": items}, indent=2) + "\n```"
    async with FakeOllamaServer(Reply(deltas=sliced(text))) as server:
        async with OllamaBackend("m", base_url=server.url) as backend:
            result, events = await run_example(backend)
        assert server.requests[0].body["format"] == typed_output.json_schema(ProductList)
    assert_example_delivered(result, events, items)


@pytest.mark.asyncio
async def test_the_example_runs_against_the_openai_server_which_gets_the_schema() -> None:
    items = products(5)
    async with FakeOpenAIServer(Reply(deltas=sliced(json.dumps({"products": items})))) as server:
        async with OpenAIBackend("m", base_url=server.url) as backend:
            result, events = await run_example(backend)
        sent = server.requests[0].body["response_format"]
        assert sent["type"] == "json_schema"
        assert sent["json_schema"]["schema"] == typed_output.json_schema(ProductList)
    assert_example_delivered(result, events, items)


# -- early cancel ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_failing_field_stops_the_generation_in_its_step_before_its_item_is_delivered() -> None:
    items = products(40, **{"17": {"currency": "GBP"}})
    text = json.dumps({"products": items})
    backend = ScriptedBackend(sliced(text), delay=0.001)
    result, events = await run_example(backend)
    delivered = [e.path for e in events if isinstance(e, ChunkEvent)]
    assert delivered == [f"$.products[{i}]" for i in range(17)]  # item 17 never delivered
    assert not result.completed and result.parsed is None
    assert result.partial.products == [Product(**p) for p in items[:17]]
    (failure,) = result.streaming_failures
    assert (
        failure[1].reason
        == "$.products[17].currency failed: the value at $.products[*].currency passes <lambda>"
    )
    # The currency check ran as the string closed: the generation stopped within the delta
    # in flight, before the rest of item 17 (its closing brace) was even received.
    closes = text.index('"GBP"') + len('"GBP"')
    assert closes <= len(result.mot.text) < closes + 4
    assert result.full_text == text[: text.index("}", text.index('"p16"')) + 1]


@pytest.mark.asyncio
async def test_text_outside_a_checks_path_is_judged_once_read_and_delivered_without_waiting() -> None:
    # A check on the first product only: the later products are outside its path, and are
    # delivered as they close, not held until the document ends.
    items = products(6)
    text = json.dumps({"products": items})
    seen_at: list[int] = []
    backend = ScriptedBackend(sliced(text), delay=0.001)
    result = await stream_with_chunking(
        "list",
        backend,
        SimpleContext(),
        format=ProductList,
        chunking="json",
        requirements=[FieldCheck("$.products[0].price", lambda p: p > 0)],
    )
    async for event in result.events():
        if isinstance(event, ChunkEvent):
            seen_at.append(len(result.mot.text))
    ends = [text.index("}", text.index(f'"p{i}"')) + 1 for i in range(6)]
    assert len(seen_at) == 6
    for i in range(5):  # the last one closes with the document
        assert seen_at[i] < ends[i + 1], (i, seen_at, ends)


@pytest.mark.asyncio
async def test_an_error_mid_document_is_the_runs_error_not_a_complaint_about_the_cut_json() -> None:
    backend = ScriptedBackend(['[{"n": 1}, {"n": '], error=RuntimeError("server died"))
    result = await stream_with_chunking(
        "x", backend, SimpleContext(), chunking="json", requirements=[FieldCheck("$[*].n", lambda n: n > 0)]
    )
    events = [e async for e in result.events()]
    (error,) = [e for e in events if isinstance(e, ErrorEvent)]
    assert (error.exception_type, error.detail) == ("RuntimeError", "server died")
    assert [e.value for e in events if isinstance(e, ChunkEvent)] == [{"n": 1}]


@pytest.mark.asyncio
async def test_an_unfinished_document_at_the_natural_end_fails_naming_the_offset() -> None:
    result = await stream_with_chunking(
        "x",
        ScriptedBackend(['[{"n": 1}, {"n": 2']),
        SimpleContext(),
        chunking="json",
        requirements=[FieldCheck("$[*].n", lambda n: n > 0)],
    )
    events = [e async for e in result.events()]
    (error,) = [e for e in events if isinstance(e, ErrorEvent)]
    assert error.exception_type == "JsonChunkingError" and "offset 18" in error.detail
    assert not result.completed


# -- paths into the user's type -------------------------------------------------------------


@pytest.mark.asyncio
async def test_paths_address_the_users_type_inside_the_servers_wrapper() -> None:
    items = products(4, **{"2": {"price": -1}})
    text = json.dumps({"result": items})  # a list type is sent wrapped as {"result": [...]}
    result = await stream_with_chunking(
        "list",
        ScriptedBackend(sliced(text)),
        SimpleContext(),
        format=list[Product],
        chunking="json",
        requirements=[FieldCheck("$[*].price", lambda p: p > 0 or f"price {p} is not positive")],
    )
    events = [e async for e in result.events()]
    assert [e.path for e in events if isinstance(e, ChunkEvent)] == ["$[0]", "$[1]"]
    assert result.partial == [Product(**p) for p in items[:2]]
    assert result.streaming_failures[0][1].reason == "$[2].price: price -1 is not positive"


@pytest.mark.asyncio
async def test_a_bare_list_answer_to_a_wrapped_format_is_read_as_it_is() -> None:
    items = products(3)
    result = await stream_with_chunking(
        "list",
        ScriptedBackend(sliced(json.dumps(items))),
        SimpleContext(),
        format=list[Product],
        chunking="json",
    )
    events = [e async for e in result.events()]
    assert [e.path for e in events if isinstance(e, ChunkEvent)] == ["$[0]", "$[1]", "$[2]"]
    assert result.parsed == [Product(**p) for p in items]


def test_the_records_of_a_type() -> None:
    class Catalog(pydantic.BaseModel):
        title: str
        items: list[Product]

    assert record_path(ProductList) == "$.products[*]"
    assert record_path(Catalog) == "$.items[*]"
    assert record_path(list[Product]) == "$[*]"
    assert record_path(Product) == "$.*"


# -- the parsed result ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_answer_that_does_not_fit_the_type_fails_the_run_naming_the_path() -> None:
    items = products(3, **{"1": {"price": "cheap"}})
    result = await stream_with_chunking(
        "list",
        ScriptedBackend([json.dumps({"products": items})]),
        SimpleContext(),
        format=ProductList,
        chunking="json",
    )
    events = [e async for e in result.events()]
    (error,) = [e for e in events if isinstance(e, ErrorEvent)]
    assert error.exception_type == "OutputParseError" and "products.1.price" in error.detail
    assert isinstance(events[-1], CompletedEvent) and not events[-1].success
    assert result.parsed is None and not result.completed


@pytest.mark.asyncio
async def test_stream_takes_format_too() -> None:
    items = products(3)
    async with await stream(
        "list",
        ScriptedBackend(sliced(json.dumps({"products": items}))),
        SimpleContext(),
        format=ProductList,
        chunking="json",
    ) as s:
        chunks = [c async for c in s]
    assert [json.loads(c) for c in chunks] == items
    assert s.result.parsed == ProductList(products=[Product(**p) for p in items])


# -- FieldCheck on its own -----------------------------------------------------------------


def ctx_with_output(text: str) -> Any:
    return SimpleContext().add(CBlock("go")).add(ModelOutputThunk(value=text))


@pytest.mark.asyncio
async def test_field_check_validate_judges_every_value_of_the_final_document() -> None:
    check = FieldCheck("$.products[*].price", lambda p: p < 3)
    good = ctx_with_output(json.dumps({"products": products(2)}))
    bad = ctx_with_output("Here:\n" + json.dumps({"products": products(4)}))
    assert (await check.validate(ScriptedBackend([]), good)).as_bool()
    verdict = await check.validate(ScriptedBackend([]), bad)
    assert not verdict.as_bool() and verdict.reason is not None and "$.products[2].price" in verdict.reason
    broken = await check.validate(ScriptedBackend([]), ctx_with_output('{"products": [1, '))
    assert not broken.as_bool() and "not JSON" in (broken.reason or "")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("returned", "success", "reason"),
    [
        (True, "pass", None),
        (False, "fail", "$.a failed: d"),
        ("too big", "fail", "$.a: too big"),
        (PartialValidationResult("unknown", reason="later"), "unknown", "later"),
    ],
)
async def test_field_check_answers(returned: Any, success: str, reason: str | None) -> None:
    (piece,) = __import__("operators").Chunker(__import__("operators").JsonChunking("$.a")).feed('{"a": 5}')
    seen: list[Any] = []

    async def check(value: Any) -> Any:
        seen.append(value)
        return returned

    verdict = await FieldCheck("$.a", check, "d").stream_validate(piece, backend=None, ctx=None)  # type: ignore[arg-type]
    assert (verdict.success, verdict.reason) == (success, reason) and seen == [5]


def test_field_check_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"path '\$\.\.a' is not in the supported subset"):
        FieldCheck("$..a", bool)
    with pytest.raises(TypeError, match=r"FieldCheck check .* must be a function"):
        FieldCheck("$.a", 3)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_a_check_returning_something_else_names_it() -> None:
    (piece,) = __import__("operators").Chunker(__import__("operators").JsonChunking("$.a")).feed('{"a": 5}')
    with pytest.raises(TypeError, match="returned 3; return True"):
        await FieldCheck("$.a", lambda v: 3).stream_validate(piece, backend=None, ctx=None)  # type: ignore[arg-type]


# -- sessions ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_session_with_strategy_none_and_a_field_check_streams_and_stops_at_the_bad_item() -> None:
    items = products(30, **{"9": {"currency": "GBP"}})
    text = json.dumps({"products": items})
    backend = ScriptedBackend(sliced(text), delay=0.001)
    m = Session(backend)
    thunk = await m.ainstruct(
        "List products", format=ProductList, requirements=example_requirements(), strategy=None
    )
    assert json.loads(thunk.value + "]}") == {"products": items[:9]}  # the delivered records
    assert thunk.parsed_repr.products == [Product(**p) for p in items[:9]]  # the partial object
    received = backend.generations[0]
    assert received.extra["streaming"] is True
    closes = text.index('"GBP"') + len('"GBP"')
    assert len(m.ctx.last_output().value) < closes + 4  # the generation stopped there  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_a_session_with_strategy_none_and_a_field_check_returns_the_parsed_answer() -> None:
    items = products(3)
    m = Session(ScriptedBackend(sliced(json.dumps({"products": items}))))
    thunk = await m.ainstruct(
        "List products", format=ProductList, requirements=example_requirements(), strategy=None
    )
    assert thunk.parsed_repr == ProductList(products=[Product(**p) for p in items])
