"""The gateway in front of a real OpenAI-compatible server nobody here wrote: llama-cpp-python's
(``make test-integration``; see test_llama_cpp_server.py for the server and its tiny random model).

The official openai client talks to the gateway, the gateway to the real server: a plain stream
reaches the client whole; a failed check ends it with ``content_filter`` and closes the
gateway's connection to the server; the server streams no usage, so none is reported.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from engine import PartialValidationResult, Requirement, ValidationResult
from engine.gateway import GATEWAY, create_app, load_config
from tests.gateway_helpers import running
from tests.integration.test_llama_cpp_server import LlamaServer, llama_server

pytestmark = pytest.mark.integration

__all__ = ["llama_server"]  # the fixture, shared with the backend's integration tests


class FailsTheThirdWord(Requirement):
    def __init__(self) -> None:
        super().__init__("fails the third word")
        self.seen = 0

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        self.seen += 1
        return PartialValidationResult("fail" if self.seen == 3 else "unknown", reason="third word")

    async def validate(self, backend: Any, ctx: Any, **_: Any) -> ValidationResult:
        return ValidationResult(True)


def third_word_fails() -> list[Requirement]:
    """The ``requirements`` factory: a fresh check per request."""
    return [FailsTheThirdWord()]


@contextlib.asynccontextmanager
async def _gateway(server: LlamaServer, **config: Any) -> AsyncIterator[tuple[str, Any]]:
    settings = {"backend": "openai", "base_url": f"{server.url}/v1", "model": "tiny", **config}
    app = create_app(load_config(settings, environ={}))
    async with running(app) as root:
        yield root, app[GATEWAY]


@pytest.mark.asyncio
async def test_the_openai_client_streams_a_real_servers_answer_through_the_gateway(
    llama_server: LlamaServer,
) -> None:
    async with (
        _gateway(llama_server) as (root, _),
        openai.AsyncOpenAI(base_url=f"{root}/v1", api_key="unused", max_retries=0) as client,
    ):
        stream = await client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "Say something."}],
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=16,
            seed=7,
        )
        chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks)  # the server streams no usage: none is made up


@pytest.mark.asyncio
async def test_a_failed_check_is_content_filter_and_closes_the_connection_to_the_server(
    llama_server: LlamaServer,
) -> None:
    spec = "tests.integration.test_gateway_llama_cpp:third_word_fails"
    async with _gateway(llama_server, requirements=spec, chunking="word") as (root, gateway):
        async with openai.AsyncOpenAI(base_url=f"{root}/v1", api_key="unused", max_retries=0) as client:
            completion = await client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "Write."}], max_tokens=300
            )
        generation = gateway.backend.generations[-1]
        assert generation.connection_closed_at is not None and generation.deltas_sent < 300
    assert completion.choices[0].finish_reason == "content_filter"
    assert (completion.model_extra or {})["rxllm"]["failed_check"]["requirement"] == "fails the third word"
