"""OpenAI-compatible servers that refuse ``response_format: {"type": "json_schema", ...}``.

With ``response_format_type="auto"`` (the default) an error answer before any delta whose
text names ``json_schema`` or ``response_format`` gets the request once more with the
``{"type": "json_object", "schema": ...}`` form, which the backend then keeps sending. An
explicit ``response_format_type`` never falls back, and an error that names a field of the
request says to change the request, never to retry it.
"""

from __future__ import annotations

import logging
from typing import Any

import pydantic
import pytest

from backends import BackendError, BadRequestError, OpenAIBackend, ServerError
from engine import ModelOption, SimpleContext
from tests.fake_servers import FakeOpenAIServer, Reply

# What llama-cpp-python's server (0.3.x) answers, with status 500, to the json_schema form.
LLAMA_REFUSAL = (
    "1 validation error for CreateChatCompletionRequest\nresponse_format.type\n  Input should be 'text' or "
    "'json_object' [type=literal_error, input_value='json_schema', input_type=str]"
)


class Pet(pydantic.BaseModel):
    name: str
    legs: int


ANSWER = Reply(deltas=['{"name": "Rex", ', '"legs": 4}'])


async def generate(backend: OpenAIBackend, stream: bool) -> Pet:
    thunk, _ = await backend.generate_from_context(
        "Describe a pet.", SimpleContext(), format=Pet, model_options={ModelOption.STREAM: stream}
    )
    return Pet.model_validate_json(await thunk.avalue())


def forms(server: FakeOpenAIServer) -> list[str]:
    return [record.body["response_format"]["type"] for record in server.requests]


REFUSALS = {
    "llama-cpp-500": Reply(status=500, error=LLAMA_REFUSAL),
    "400": Reply(status=400, error="response_format: unknown type 'json_schema'"),
    "422": Reply(
        status=422, error="Unsupported value: 'response_format.type' does not support 'json_schema'"
    ),
    "error-frame-before-any-delta": Reply(deltas=[], error_after=0, error="json_schema is not supported"),
}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("refused", "stream"),
    [(name, stream) for name in REFUSALS for stream in (False, True) if stream or "frame" not in name],
)
async def test_auto_falls_back_once_to_json_object_and_keeps_it(
    refused: str, stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    refusal = REFUSALS[refused]
    caplog.set_level(logging.INFO, logger="backends")
    async with FakeOpenAIServer(ANSWER) as server, OpenAIBackend("m", base_url=server.url) as backend:
        server.enqueue(refusal)
        assert await generate(backend, stream) == Pet(name="Rex", legs=4)
        assert await generate(backend, stream) == Pet(name="Rex", legs=4)
    assert forms(server) == ["json_schema", "json_object", "json_object"]
    first, second, _ = (record.body["response_format"] for record in server.requests)
    assert second == {"type": "json_object", "schema": first["json_schema"]["schema"]}
    assert backend.response_format_type == "auto"
    infos = [r for r in caplog.records if r.levelno == logging.INFO and "json_object" in r.getMessage()]
    assert len(infos) == 1 and "json_schema" in infos[0].getMessage()


@pytest.mark.asyncio
@pytest.mark.parametrize("explicit", ["json_schema", "json_object"])
async def test_an_explicit_form_never_falls_back_and_the_hint_is_about_the_request(explicit: str) -> None:
    async with (
        FakeOpenAIServer(Reply(status=500, error=LLAMA_REFUSAL)) as server,
        OpenAIBackend("m", base_url=server.url, response_format_type=explicit) as backend,  # type: ignore[arg-type]
    ):
        with pytest.raises(ServerError) as info:
            await generate(backend, stream=False)
    assert forms(server) == [explicit]
    message = str(info.value)
    assert "response_format" in message and "request" in message
    assert "retry" not in message.lower()


@pytest.mark.asyncio
async def test_a_second_refusal_is_the_error_and_there_is_no_third_request() -> None:
    async with (
        FakeOpenAIServer(Reply(status=500, error=LLAMA_REFUSAL)) as server,
        OpenAIBackend("m", base_url=server.url) as backend,
    ):
        with pytest.raises(ServerError) as info:
            await generate(backend, stream=True)
    assert forms(server) == ["json_schema", "json_object"]
    assert "retry" not in str(info.value).lower()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "reply",
    [
        Reply(status=500, error="CUDA out of memory"),  # names neither json_schema nor response_format
        Reply(status=401, error="response_format needs a paid plan"),  # not a refusal of the form
        Reply(deltas=["{"], error_after=1, error="json_schema grammar failed"),  # after a delta
    ],
    ids=["other-500", "401", "after-a-delta"],
)
async def test_other_errors_do_not_fall_back(reply: Reply) -> None:
    async with FakeOpenAIServer(reply) as server, OpenAIBackend("m", base_url=server.url) as backend:
        with pytest.raises(BackendError):
            await generate(backend, stream=True)
    assert forms(server) == ["json_schema"]


@pytest.mark.asyncio
async def test_without_format_a_refusal_is_not_retried() -> None:
    async with (
        FakeOpenAIServer(Reply(status=500, error="response_format is broken")) as server,
        OpenAIBackend("m", base_url=server.url) as backend,
    ):
        thunk, _ = await backend.generate_from_context("Hi.", SimpleContext())
        with pytest.raises(ServerError):
            await thunk.avalue()
    assert len(server.requests) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [400, 422, 500])
async def test_an_error_naming_a_request_field_says_to_change_the_request(status: int) -> None:
    said = "max_tokens must be at most 4096"
    options: dict[str, Any] = {ModelOption.MAX_NEW_TOKENS: 10**6}
    async with (
        FakeOpenAIServer(Reply(status=status, error=said)) as server,
        OpenAIBackend("m", base_url=server.url) as backend,
    ):
        thunk, _ = await backend.generate_from_context("Hi.", SimpleContext(), model_options=options)
        with pytest.raises((BadRequestError, ServerError)) as info:
            await thunk.avalue()
    message = str(info.value)
    assert said in message and "max_tokens" in message.replace(said, "")
    assert "retry" not in message.lower()


def test_an_unknown_response_format_type_is_refused() -> None:
    with pytest.raises(ValueError, match=r"response_format_type.*'auto'.*'xml'"):
        OpenAIBackend("m", base_url="http://127.0.0.1:1/v1", response_format_type="xml")  # type: ignore[arg-type]
