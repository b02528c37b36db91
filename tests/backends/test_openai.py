"""OpenAIBackend: request mapping, SSE variants, usage, and keeping the API key secret."""

from __future__ import annotations

import logging

import pytest

from backends import AuthenticationError, OpenAIBackend
from engine import ModelOption, SimpleContext
from tests.fake_servers import FakeOpenAIServer, Reply

KEY = "sk-test-0123456789abcdefSECRET"
STREAM = {ModelOption.STREAM: True}


def test_base_url_and_key_come_from_the_argument_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    backend = OpenAIBackend("gpt-4o-mini")
    assert backend.base_url == "https://api.openai.com/v1" and not backend.has_api_key
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1/")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    backend = OpenAIBackend("m")
    assert backend.base_url == "http://127.0.0.1:8000/v1" and backend.has_api_key
    assert OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", api_key="").has_api_key is False


def test_the_key_is_not_in_repr_str_or_vars_output() -> None:
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", api_key=KEY)
    assert KEY not in repr(backend) and KEY not in str(backend)
    assert repr(backend) == "OpenAIBackend('m', base_url='http://127.0.0.1:9/v1', api_key=<set>)"


@pytest.mark.asyncio
async def test_request_fields_usage_and_the_bearer_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with (
        FakeOpenAIServer(Reply(deltas=["Hi", "!"], usage=(9, 2))) as server,
        OpenAIBackend("m", base_url=server.url, api_key=KEY) as backend,
    ):
        options = {
            **STREAM,
            ModelOption.TEMPERATURE: 0.2,
            ModelOption.MAX_NEW_TOKENS: 32,
            ModelOption.SEED: 1,
            ModelOption.SYSTEM_PROMPT: "sys",
            "stop": ["\n\n"],
            "@@@unknown@@@": True,
        }
        thunk, _ = await backend.generate_from_context("hello", SimpleContext(), model_options=options)
        assert await thunk.avalue() == "Hi!"
    request = server.requests[0]
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Accept"] == "text/event-stream"
    body = request.body
    assert body == {
        "model": "m",
        "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hello"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.2,
        "max_tokens": 32,
        "seed": 1,
        "stop": ["\n\n"],
    }
    assert thunk.generation.usage == {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
    assert thunk.generation.done_reason == "stop"
    assert "/v1/chat/completions" in caplog.text  # the request was logged ...
    assert KEY not in caplog.text  # ... without the key


@pytest.mark.asyncio
async def test_include_usage_false_leaves_out_stream_options_and_no_usage_chunk_is_fine() -> None:
    async with (
        FakeOpenAIServer(Reply(deltas=["a"])) as server,
        OpenAIBackend("m", base_url=server.url, include_usage=False) as backend,
    ):
        thunk, _ = await backend.generate_from_context("x", SimpleContext(), model_options=STREAM)
        assert await thunk.avalue() == "a"
    assert "stream_options" not in server.requests[0].body
    assert "Authorization" not in server.requests[0].headers
    assert thunk.generation.usage == {}  # like llama.cpp's server: no usage chunk, no error


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "style",
    [
        {"sse_crlf": True},
        {"sse_comments": True},
        {"sse_multiline": True},
        {"sse_event_fields": True},
        {
            "sse_crlf": True,
            "sse_comments": True,
            "sse_multiline": True,
            "sse_event_fields": True,
            "write_size": 3,
        },
    ],
    ids=["crlf", "comments", "multiline-data", "event-and-id-lines", "all-in-3-byte-writes"],
)
async def test_every_legal_sse_layout_parses(style: dict[str, object]) -> None:
    deltas = ["Un ", "deux ", "trois 🎉"]
    async with (
        FakeOpenAIServer(Reply(deltas=deltas, **style)) as server,  # type: ignore[arg-type]
        OpenAIBackend("m", base_url=server.url) as backend,
    ):
        thunk, _ = await backend.generate_from_context("x", SimpleContext(), model_options=STREAM)
        assert await thunk.avalue() == "".join(deltas)
    assert thunk.generation.usage["completion_tokens"] == 3


@pytest.mark.asyncio
async def test_server_text_that_echoes_the_key_is_redacted() -> None:
    reply = Reply(status=401, error=f"Incorrect API key provided: {KEY}. You can find your API key at ...")
    async with (
        FakeOpenAIServer(reply) as server,
        OpenAIBackend("m", base_url=server.url, api_key=KEY) as backend,
    ):
        thunk, _ = await backend.generate_from_context("x", SimpleContext(), model_options=STREAM)
        with pytest.raises(AuthenticationError) as info:
            await thunk.avalue()
    error = info.value
    assert KEY not in str(error) and KEY not in repr(error) and KEY not in error.server_message
    assert "***" in str(error) and "OPENAI_API_KEY" in str(error) and "was sent" in str(error)


@pytest.mark.asyncio
async def test_a_pydantic_style_format_becomes_a_json_schema_response_format() -> None:
    class Answer:
        @staticmethod
        def model_json_schema() -> dict[str, object]:
            return {"type": "object"}

    async with (
        FakeOpenAIServer(Reply(deltas=["{}"])) as server,
        OpenAIBackend("m", base_url=server.url) as backend,
    ):
        thunk, _ = await backend.generate_from_context("x", SimpleContext(), format=Answer)
        assert await thunk.avalue() == "{}"
    assert server.requests[0].body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Answer", "schema": {"type": "object"}},
    }
