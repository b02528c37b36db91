"""``list_models()`` of the HTTP backends, over real sockets against the fake servers: OpenAI's
``GET /v1/models`` and Ollama's ``GET /api/tags``, their errors as the backends' errors."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from aiohttp import web

from backends import OllamaBackend, OpenAIBackend
from backends.errors import AuthenticationError, BackendUnreachableError, MalformedStreamError, ServerError
from backends.model_list import ListedModel
from tests.fake_servers import FakeOllamaServer, FakeOpenAIServer, Reply
from tests.gateway_helpers import running

SECRET = "sk-listing-secret-123456"


@pytest.mark.asyncio
async def test_openai_lists_the_servers_models_with_their_fields_and_sends_the_key() -> None:
    async with (
        FakeOpenAIServer(models=["gpt-x", "gpt-y"]) as server,
        OpenAIBackend("gpt-x", base_url=server.url, api_key=SECRET) as backend,
    ):
        models = await backend.list_models()
    assert models == [
        ListedModel("gpt-x", created=1_700_000_000, owned_by="fake-org"),
        ListedModel("gpt-y", created=1_700_000_001, owned_by="fake-org"),
    ]
    assert server.listings[0]["Authorization"] == f"Bearer {SECRET}"


@pytest.mark.asyncio
async def test_ollama_lists_the_pulled_models_with_their_modification_time() -> None:
    async with (
        FakeOllamaServer(models=["llama3.2:1b", "qwen2.5:0.5b"]) as server,
        OllamaBackend("llama3.2:1b", base_url=server.url) as backend,
    ):
        models = await backend.list_models()
    assert [m.id for m in models] == ["llama3.2:1b", "qwen2.5:0.5b"]
    assert models[0].created == 1_714_582_800  # 2024-05-01T10:00:00.123456789-07:00
    assert all(m.owned_by is None for m in models)


@pytest.mark.asyncio
@pytest.mark.parametrize(("status", "error"), [(401, AuthenticationError), (500, ServerError)])
async def test_an_error_status_is_the_backends_error_without_the_key(status: int, error: type) -> None:
    async with FakeOpenAIServer() as server:
        server.models_reply = Reply(status=status, error=f"the key {SECRET} is not valid here")
        async with OpenAIBackend("m", base_url=server.url, api_key=SECRET) as backend:
            with pytest.raises(error) as caught:
                await backend.list_models()
    assert SECRET not in str(caught.value) and "not valid here" in str(caught.value)


@pytest.mark.asyncio
async def test_an_unreachable_server_is_backend_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with OllamaBackend("m", base_url=f"http://127.0.0.1:{port}") as backend:
        with pytest.raises(BackendUnreachableError):
            await backend.list_models()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("backend_class", "path", "body"),
    [
        (OpenAIBackend, "/v1/models", "<html>login</html>"),
        (OpenAIBackend, "/v1/models", '{"data": [{"name": "no id"}]}'),
        (OllamaBackend, "/api/tags", '{"models": "none"}'),
    ],
)
async def test_an_answer_that_is_not_a_listing_is_malformed(backend_class: Any, path: str, body: str) -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(text=body, content_type="application/json")

    app = web.Application()
    app.router.add_get(path, answer)
    async with running(app) as root:
        base_url = f"{root}/v1" if backend_class is OpenAIBackend else root
        async with backend_class("m", base_url=base_url) as backend:
            with pytest.raises(MalformedStreamError) as caught:
                await backend.list_models()
    assert "model listing" in str(caught.value)
