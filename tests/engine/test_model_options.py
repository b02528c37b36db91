"""``model_options=`` of ``stream_with_chunking`` and ``stream()``: checked before anything starts,
sent with every generation of the run (retries included), never changed in the caller's hands."""

from __future__ import annotations

from typing import Any

import pytest

from backends import OpenAIBackend, ScriptedBackend
from engine import ForbiddenWords, ModelOption, SimpleContext, StreamRetry, stream, stream_with_chunking
from tests.fake_servers import FakeOpenAIServer, Reply

OPTIONS = {ModelOption.TEMPERATURE: 0.25, ModelOption.SEED: 7, ModelOption.MAX_NEW_TOKENS: 40, "top_p": 0.5}
WIRE = {"temperature": 0.25, "seed": 7, "max_tokens": 40, "top_p": 0.5}


async def _start(api: str, backend: Any, **kwargs: Any) -> Any:
    if api == "stream_with_chunking":
        return await stream_with_chunking("Hi", backend, SimpleContext(), **kwargs)
    handle = await stream("Hi", backend, SimpleContext(), chunking="sentence", **kwargs)
    return handle.result


@pytest.mark.asyncio
@pytest.mark.parametrize("api", ["stream_with_chunking", "stream"])
async def test_every_attempt_of_a_run_sends_the_callers_options(api: str) -> None:
    first = Reply(deltas=["Fine. ", "It is Celsius. ", "more."], delay=0.02)
    second = Reply(deltas=[" Calm."])
    given = dict(OPTIONS)
    async with FakeOpenAIServer(first) as server, OpenAIBackend("m", base_url=server.url) as backend:
        server.enqueue(first, second)
        result = await _start(
            api,
            backend,
            requirements=[ForbiddenWords(["Celsius"])],
            retry=StreamRetry(max_attempts=2),
            model_options=given,
        )
        await result.acomplete()
        assert result.attempts_used == 2
        assert len(server.requests) == 2
        for record in server.requests:
            assert {key: record.body[key] for key in WIRE} == WIRE
            assert record.body["stream"] is True
    assert given == OPTIONS  # the caller's mapping is untouched (STREAM is not added to it)


@pytest.mark.asyncio
@pytest.mark.parametrize("api", ["stream_with_chunking", "stream"])
@pytest.mark.parametrize("bad", [[("temperature", 0.2)], "temperature=0.2", 0.2])
async def test_a_model_options_that_is_not_a_mapping_is_refused_before_any_generation(
    api: str, bad: Any
) -> None:
    backend = ScriptedBackend(["Hello."])
    with pytest.raises(TypeError, match=r"model_options must be a mapping .* got "):
        await _start(api, backend, model_options=bad)
    assert backend.generations == []


@pytest.mark.asyncio
async def test_none_and_an_empty_mapping_stream_as_before() -> None:
    for options in (None, {}):
        backend = ScriptedBackend(["Hello. ", "World."])
        result = await stream_with_chunking("Hi", backend, SimpleContext(), model_options=options)
        await result.acomplete()
        assert result.full_text == "Hello. World."
        assert backend.generations[0].extra["streaming"] is True
