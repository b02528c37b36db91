"""OllamaBackend: request mapping, OLLAMA_HOST, and Ollama-specific answers."""

from __future__ import annotations

import pytest

from backends import BadRequestError, ModelNotFoundError, OllamaBackend
from backends.ollama import ollama_base_url
from engine import ChatContext, Instruction, Message, ModelOption, SimpleContext
from tests.fake_servers import FakeOllamaServer, Reply


@pytest.mark.parametrize(
    ("value", "url"),
    [
        (None, "http://127.0.0.1:11434"),
        ("", "http://127.0.0.1:11434"),
        ("0.0.0.0", "http://0.0.0.0:11434"),
        ("example.com:8080", "http://example.com:8080"),
        (":9999", "http://127.0.0.1:9999"),
        ("http://example.com", "http://example.com:80"),
        ("https://example.com", "https://example.com:443"),
        ("https://example.com:8443/ollama/", "https://example.com:8443/ollama"),
        ("[::1]:11434", "http://[::1]:11434"),
        ("  localhost  ", "http://localhost:11434"),
    ],
)
def test_ollama_host_is_read_the_way_ollama_reads_it(value: str | None, url: str) -> None:
    assert ollama_base_url(value) == url


def test_an_invalid_ollama_host_port_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="OLLAMA_HOST"):
        ollama_base_url("host:notaport")


def test_base_url_argument_beats_ollama_host_which_beats_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert OllamaBackend("m").base_url == "http://127.0.0.1:11434"
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:5555")
    assert OllamaBackend("m").base_url == "http://127.0.0.1:5555"
    assert OllamaBackend("m", base_url="http://127.0.0.1:7/").base_url == "http://127.0.0.1:7"
    assert repr(OllamaBackend("m")) == "OllamaBackend('m', base_url='http://127.0.0.1:5555')"


def test_bad_arguments_are_rejected_with_the_fix() -> None:
    with pytest.raises(ValueError, match="model name"):
        OllamaBackend("")
    with pytest.raises(ValueError, match="idle_timeout"):
        OllamaBackend("m", idle_timeout=0)
    with pytest.raises(ValueError, match="max_connections"):
        OllamaBackend("m", max_connections=0)


@pytest.mark.asyncio
async def test_options_context_and_system_prompt_become_the_request() -> None:
    async with FakeOllamaServer(Reply(deltas=["ok"])) as server:
        defaults = {ModelOption.TEMPERATURE: 0.5, "num_ctx": 4096}
        async with OllamaBackend("llama3.2", base_url=server.url, model_options=defaults) as backend:
            first, ctx = await backend.generate_from_context(Message("user", "Hi"), ChatContext())
            assert await first.avalue() == "ok"
            options = {
                ModelOption.STREAM: True,
                ModelOption.TEMPERATURE: 0.1,
                ModelOption.MAX_NEW_TOKENS: 64,
                ModelOption.SEED: 42,
                ModelOption.SYSTEM_PROMPT: "Be brief.",
                "top_k": 10,
                "keep_alive": "5m",
                "@@@some_other_backend_option@@@": 1,
            }
            second, ctx2 = await backend.generate_from_context(
                Instruction("Say more."), ctx, model_options=options
            )
            assert await second.avalue() == "ok"
            assert ctx2.as_list() == [*ctx.as_list(), Instruction("Say more."), second]
    body = server.requests[1].body
    assert body["model"] == "llama3.2" and body["stream"] is True and body["keep_alive"] == "5m"
    assert body["options"] == {
        "temperature": 0.1,
        "num_ctx": 4096,
        "num_predict": 64,
        "seed": 42,
        "top_k": 10,
    }
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "Say more."},
    ]
    # Without STREAM, Ollama's own default (stream) is overridden explicitly.
    assert server.requests[0].body["stream"] is False
    assert server.requests[0].body["options"] == {"temperature": 0.5, "num_ctx": 4096}


@pytest.mark.asyncio
async def test_ollama_timings_and_counts_are_recorded() -> None:
    async with (
        FakeOllamaServer(Reply(deltas=["a", "b"], usage=(11, 2), done_reason="length")) as server,
        OllamaBackend("m", base_url=server.url) as backend,
    ):
        thunk, _ = await backend.generate_from_context(
            "x", SimpleContext(), model_options={ModelOption.STREAM: True}
        )
        await thunk.avalue()
    generation = thunk.generation
    assert generation.done_reason == "length"
    assert generation.usage == {
        "prompt_eval_count": 11,
        "prompt_tokens": 11,
        "eval_count": 2,
        "completion_tokens": 2,
        "total_tokens": 13,
    }
    assert generation.extra["eval_duration"] == 4_032_296_000


@pytest.mark.asyncio
async def test_model_not_found_says_ollama_pull() -> None:
    reply = Reply(status=404, error='model "llama9" not found, try pulling it first')
    async with FakeOllamaServer(reply) as server, OllamaBackend("llama9", base_url=server.url) as backend:
        thunk, _ = await backend.generate_from_context("x", SimpleContext())
        with pytest.raises(ModelNotFoundError, match=r"`ollama pull llama9`") as info:
            await thunk.avalue()
    assert f"{server.url}/api/chat" in str(info.value)


@pytest.mark.asyncio
async def test_a_format_schema_is_sent_as_ollamas_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    async with (
        FakeOllamaServer(Reply(deltas=['{"a": 1}'])) as server,
        OllamaBackend("m", base_url=server.url) as backend,
    ):
        thunk, _ = await backend.generate_from_context("x", SimpleContext(), format=schema)  # type: ignore[arg-type]
        assert await thunk.avalue() == '{"a": 1}'
    assert server.requests[0].body["format"] == schema
    with pytest.raises(TypeError, match="pydantic"):
        await backend.generate_from_context("x", SimpleContext(), format=SyntaxWarning)  # no output type


@pytest.mark.asyncio
async def test_a_404_without_a_model_means_a_wrong_base_url_not_a_missing_model() -> None:
    async with (
        FakeOllamaServer(Reply(status=404, error="404 page not found")) as server,
        OllamaBackend("m", base_url=server.url) as backend,
    ):
        thunk, _ = await backend.generate_from_context("x", SimpleContext())
        with pytest.raises(BadRequestError, match="No such endpoint: check base_url"):
            await thunk.avalue()
