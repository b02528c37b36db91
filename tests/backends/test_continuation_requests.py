"""In-stream retry over the loopback fake servers: the exact continuation requests."""

from __future__ import annotations

from typing import Any

import pytest

from backends import OllamaBackend, OpenAIBackend
from engine import (
    ChatContext,
    Continuation,
    Instruction,
    Message,
    ModelOption,
    RetryEvent,
    SimpleContext,
    StreamRetry,
    stream_with_chunking,
)
from engine.core.backend import Backend
from tests.doubles import NoShouting
from tests.fake_servers import FakeOllamaServer, FakeOpenAIServer, Reply

RETRY = StreamRetry(repair="Rejected {rejected!r}: {reason}. Go on calmly.")
REPAIR = "Rejected 'LOUD.': Do not shout: 'LOUD.' is in capitals. Go on calmly."
FIRST = Reply(deltas=["Fine. ", "LOUD. ", "more ", "text."], delay=0.05)
SECOND = Reply(deltas=[" Calm.", " Done."])


async def _run(backend: Backend) -> Any:
    ctx = ChatContext().add(Message("user", "Hi")).add(Message("assistant", "Hello."))
    result = await stream_with_chunking(
        Instruction("Say two things."), backend, ctx, requirements=[NoShouting()], retry=RETRY
    )
    events = [e async for e in result.events()]
    await result.acomplete()
    return result, events


@pytest.mark.asyncio
async def test_ollama_continues_a_trailing_assistant_message() -> None:
    async with FakeOllamaServer(FIRST) as server, OllamaBackend("m", base_url=server.url) as backend:
        server.enqueue(FIRST, SECOND)
        result, events = await _run(backend)
        await server.requests[0].wait_disconnected(within=2.0)  # the failing attempt's connection closed
    assert result.full_text == "Fine. Calm. Done." and result.completed and result.attempts_used == 2
    assert sum(isinstance(e, RetryEvent) for e in events) == 1
    assert server.requests[1].body == {
        "model": "m",
        "stream": True,
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Say two things.\n\n" + REPAIR},
            {"role": "assistant", "content": "Fine."},
        ],
    }


@pytest.mark.asyncio
async def test_openai_compatible_servers_get_the_prefix_with_vllms_continue_option() -> None:
    async with FakeOpenAIServer(FIRST) as server, OpenAIBackend("m", base_url=server.url) as backend:
        server.enqueue(FIRST, SECOND)
        result, _ = await _run(backend)
        await server.requests[0].wait_disconnected(within=2.0)
    assert result.full_text == "Fine. Calm. Done." and result.completed
    assert "continue_final_message" not in server.requests[0].body
    assert server.requests[1].body == {
        "model": "m",
        "stream": True,
        "stream_options": {"include_usage": True},
        "continue_final_message": True,
        "add_generation_prompt": False,
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Say two things.\n\n" + REPAIR},
            {"role": "assistant", "content": "Fine."},
        ],
    }


def test_openai_itself_and_strict_servers_get_no_continue_fields() -> None:
    turn = Continuation(Message("system", "Be calm."), "Fine.", repair="Go on.")
    options = {ModelOption.STREAM: True}
    _, body = OpenAIBackend("gpt-4o-mini", base_url="https://api.openai.com/v1")._request(
        turn, SimpleContext(), options, None, True
    )
    assert "continue_final_message" not in body and "add_generation_prompt" not in body
    # A non-user action keeps its role; the repair instruction becomes its own user turn.
    assert body["messages"] == [
        {"role": "system", "content": "Be calm."},
        {"role": "user", "content": "Go on."},
        {"role": "assistant", "content": "Fine."},
    ]
    _, body = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", continue_fields={})._request(
        turn, SimpleContext(), options, None, True
    )
    assert "continue_final_message" not in body
