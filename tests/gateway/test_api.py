"""The gateway (``rxllm serve``) over real sockets: the official openai client, curl and raw sockets in
front, a loopback fake OpenAI-compatible upstream behind."""

from __future__ import annotations

import asyncio
import logging
import shutil
from typing import Any

import aiohttp
import openai
import pytest

from engine.gateway import create_app, load_config
from tests.fake_servers import Reply
from tests.gateway_helpers import (
    FACTORY_CALLS,
    HANGS,
    MODEL,
    SLOW,
    chat_body,
    close_writer,
    gateway,
    raw_request,
    running,
    sse_events,
)

ANSWER = Reply(deltas=["The sky ", "is blue. ", "It is ", "Celsius ", "cold. ", "The end."], delay=0.005)
TEXT = "The sky is blue. It is Celsius cold. The end."


def sdk(root: str, key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{root}/v1", api_key=key, max_retries=0)


# -- the official openai client ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_openai_sdk_streams_the_validated_answer_with_usage() -> None:
    async with gateway(ANSWER) as (root, upstream, _), sdk(root) as client:
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == TEXT
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (7, 6)
    assert upstream.requests[0].body["stream"] is True


@pytest.mark.asyncio
async def test_openai_sdk_sees_content_filter_and_the_failed_check_and_the_upstream_is_cancelled() -> None:
    async with gateway(SLOW, forbid=["Sentence 3"]) as (root, upstream, _), sdk(root) as client:
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
        # The failing chunk stopped the upstream generation: its server saw the connection close.
        await upstream.requests[0].wait_disconnected(within=5.0)
        assert upstream.requests[0].frames_written < 50
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "Sentence 0 is here. Sentence 1 is here. Sentence 2 is here."
    last = chunks[-1]
    assert last.choices[0].finish_reason == "content_filter"
    extension = (last.model_extra or {})["rxllm"]
    assert extension["attempts"] == 1
    assert extension["failed_check"]["requirement"] == "forbidden: Sentence 3"
    assert "Sentence 3" in extension["failed_check"]["reason"]


@pytest.mark.asyncio
async def test_openai_sdk_non_streaming_gets_200_content_filter_and_the_header() -> None:
    async with gateway(ANSWER, forbid=["Celsius"]) as (root, _, _), sdk(root) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}]
        )
        completion = raw.parse()
    assert raw.status_code == 200
    assert completion.choices[0].finish_reason == "content_filter"
    assert completion.choices[0].message.content == "The sky is blue."
    assert raw.headers["x-rxllm-failed-check"] == "forbidden: Celsius: forbidden word 'Celsius'"
    assert (completion.model_extra or {})["rxllm"]["failed_check"]["requirement"] == "forbidden: Celsius"


@pytest.mark.asyncio
async def test_openai_sdk_non_streaming_passes_with_usage() -> None:
    async with gateway(ANSWER) as (root, _, _), sdk(root) as client:
        completion = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}]
        )
    assert completion.choices[0].message.content == TEXT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 6


@pytest.mark.asyncio
async def test_openai_sdk_sees_an_unknown_model_as_not_found() -> None:
    async with gateway(ANSWER) as (root, upstream, _), sdk(root) as client:
        with pytest.raises(openai.NotFoundError) as caught:
            await client.chat.completions.create(model="other", messages=[{"role": "user", "content": "Hi"}])
        assert upstream.requests == []
    assert caught.value.code == "model_not_found"


# -- curl -------------------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (.ci/run installs it)")
async def test_curl_streams_sse_frames_then_done() -> None:
    async with gateway(ANSWER, forbid=["Celsius"]) as (root, _, _):
        proc = await asyncio.create_subprocess_exec(
            "curl",
            "-sN",
            f"{root}/v1/chat/completions",
            "-H",
            "Content-Type: application/json",
            "-d",
            '{"model": "m", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}',
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    events = sse_events(out.decode())
    assert events[-1] == "[DONE]"
    assert all(e["object"] == "chat.completion.chunk" for e in events[:-1])
    assert events[-2]["choices"][0]["finish_reason"] == "content_filter"
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1]) == "The sky is blue."


# -- cancellation over real sockets -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_client_that_disconnects_cancels_the_upstream_generation() -> None:
    async with gateway(HANGS) as (root, upstream, app):
        reader, writer = await raw_request(root, chat_body(stream=True))
        head = await reader.readuntil(b"Sentence 0 is here.")  # the stream has started
        assert b"200 OK" in head
        await close_writer(writer)
        record = upstream.requests[0]
        await record.wait_disconnected(within=5.0)
        assert record.completed_at is None
        async with asyncio.timeout(5):
            while app.active:
                await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_the_request_deadline_cancels_the_upstream_and_ends_with_a_timeout_frame() -> None:
    async with gateway(SLOW, request_timeout=0.5) as (root, upstream, _), aiohttp.ClientSession() as http:
        async with http.post(f"{root}/v1/chat/completions", json=chat_body(stream=True)) as response:
            assert response.status == 200
            events = sse_events(await response.text())
        await upstream.requests[0].wait_disconnected(within=5.0)
        async with http.post(f"{root}/v1/chat/completions", json=chat_body()) as response:
            assert response.status == 504
            assert (await response.json())["error"]["type"] == "timeout"
        await upstream.requests[1].wait_disconnected(within=5.0)
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["type"] == "timeout"
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}


# -- upstream failures ----------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("status", "expected", "code"),
    [(500, 502, "upstream_error"), (400, 400, "upstream_rejected"), (429, 429, "rate_limited")],
)
async def test_an_upstream_error_before_the_stream_started_is_a_status_and_an_openai_error(
    status: int, expected: int, code: str
) -> None:
    reply = Reply(status=status, error="the prompt is too long")
    async with (
        gateway(reply) as (root, _, _),
        aiohttp.ClientSession() as http,
        http.post(f"{root}/v1/chat/completions", json=chat_body(stream=True)) as response,
    ):
        body = await response.json()
    assert response.status == expected
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code


@pytest.mark.asyncio
async def test_an_upstream_error_after_the_stream_started_is_an_error_frame_then_done() -> None:
    reply = Reply(deltas=["One. ", "Two. ", "Three. "], error_after=2, error="boom")
    async with (
        gateway(reply) as (root, _, _),
        aiohttp.ClientSession() as http,
        http.post(f"{root}/v1/chat/completions", json=chat_body(stream=True)) as response,
    ):
        assert response.status == 200
        events = sse_events(await response.text())
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["code"] == "upstream_error"
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-2]) == "One. Two."


@pytest.mark.asyncio
async def test_no_upstream_secret_reaches_a_response_or_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-upstream-secret-1234567890"
    echo = Reply(status=401, error=f"invalid key {secret} for this project")
    caplog.set_level(logging.DEBUG)
    async with (
        gateway(echo, api_key=secret) as (root, upstream, _),
        aiohttp.ClientSession() as http,
    ):
        for stream in (True, False):
            async with http.post(f"{root}/v1/chat/completions", json=chat_body(stream=stream)) as response:
                text = await response.text()
                assert response.status == 502
                assert secret not in text and secret not in str(response.headers)
        assert upstream.requests[0].headers["Authorization"] == f"Bearer {secret}"
    assert caplog.records and all(secret not in r.getMessage() for r in caplog.records)
    assert any("upstream failure" in r.getMessage() for r in caplog.records)


# -- requests -------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_honoured_request_fields_reach_the_upstream() -> None:
    async with gateway(ANSWER) as (root, upstream, _), aiohttp.ClientSession() as http:
        body = chat_body(
            temperature=0.3, max_completion_tokens=12, stop=["END"], seed=5, stream=True, top_p=0.1
        )
        body["messages"] = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Why "}, {"type": "text", "text": "blue?"}],
            },
        ]
        async with http.post(f"{root}/v1/chat/completions", json=body) as response:
            assert response.status == 200
            await response.read()
    sent = upstream.requests[0].body
    assert (sent["temperature"], sent["max_tokens"], sent["stop"], sent["seed"]) == (0.3, 12, ["END"], 5)
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Why blue?"},
    ]
    assert "top_p" not in sent  # not a field the gateway honours


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("fields", "status", "param"),
    [
        ({"n": 2}, 400, "n"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools"),
        ({"response_format": {"type": "json_object"}}, 400, "response_format"),
        ({"logprobs": True}, 400, "logprobs"),
        ({"temperature": 3}, 400, "temperature"),
        ({"max_tokens": 0}, 400, "max_tokens"),
        ({"stop": [1]}, 400, "stop"),
        ({"messages": []}, 400, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, 400, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "x"}] * 257}, 400, "messages"),
        ({"model": "gpt-4"}, 404, "model"),
    ],
)
async def test_refused_requests_get_an_openai_error_and_start_nothing(
    fields: dict[str, Any], status: int, param: str
) -> None:
    async with gateway(ANSWER) as (root, upstream, _), aiohttp.ClientSession() as http:
        async with http.post(f"{root}/v1/chat/completions", json={**chat_body(), **fields}) as response:
            body = await response.json()
        assert upstream.requests == []
    assert response.status == status
    assert body["error"]["param"] == param
    assert body["error"]["message"]


@pytest.mark.asyncio
async def test_bodies_over_the_limit_and_bad_json_are_refused() -> None:
    async with gateway(ANSWER, max_body_bytes=2000) as (root, upstream, _), aiohttp.ClientSession() as http:
        async with http.post(f"{root}/v1/chat/completions", json=chat_body("x" * 5000)) as response:
            assert response.status == 413
            assert (await response.json())["error"]["code"] == "request_too_large"
        async with http.post(f"{root}/v1/chat/completions", data=b"{not json") as response:
            assert response.status == 400
            assert (await response.json())["error"]["code"] == "invalid_json"
        assert upstream.requests == []


@pytest.mark.asyncio
async def test_an_idle_client_is_dropped_after_the_idle_timeout() -> None:
    async with gateway(ANSWER, idle_timeout=0.3) as (root, upstream, app):
        host, port = root.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)  # the body never comes
        await close_writer(writer)
        assert b" 408 " in answer.split(b"\r\n")[0]
        assert upstream.requests == [] and app.active == 0


# -- service --------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_bearer_auth_guards_the_api_but_not_health() -> None:
    async with gateway(ANSWER, client_key="gw-key") as (root, upstream, _), aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic gw-key"}):
            async with http.post(
                f"{root}/v1/chat/completions", json=chat_body(), headers=headers
            ) as response:
                assert response.status == 401
                assert (await response.json())["error"]["code"] == "invalid_api_key"
        for path in ("/v1/models", "/metrics"):
            async with http.get(f"{root}{path}") as response:
                assert response.status == 401
        assert upstream.requests == []
        async with http.get(f"{root}/healthz") as response:
            assert response.status == 200
        async with sdk(root, key="gw-key") as client:
            completion = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Hi"}]
            )
        assert completion.choices[0].message.content == TEXT


@pytest.mark.asyncio
async def test_streams_beyond_the_limit_get_503_with_retry_after() -> None:
    async with gateway(SLOW, max_streams=1) as (root, upstream, _), aiohttp.ClientSession() as http:
        _, writer = await raw_request(root, chat_body(stream=True))
        await upstream.wait_request(1)
        async with http.post(f"{root}/v1/chat/completions", json=chat_body()) as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "1"
            assert (await response.json())["error"]["code"] == "overloaded"
        await close_writer(writer)
        await upstream.requests[0].wait_disconnected(within=5.0)
        assert len(upstream.requests) == 1


@pytest.mark.asyncio
async def test_models_lists_the_served_model_as_the_upstream_lists_it_and_never_another() -> None:
    async with gateway(ANSWER, api_key="sk-upstream") as (root, upstream, _), sdk(root) as client:
        upstream.models = ["other-model", MODEL, "third"]
        listed = (await client.models.list()).data
        assert [(m.id, m.created, m.owned_by) for m in listed] == [(MODEL, 1_700_000_001, "fake-org")]
        assert upstream.listings[0]["Authorization"] == "Bearer sk-upstream"
        # The upstream's other models are not offered: a request naming one is refused.
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(
                model="other-model", messages=[{"role": "user", "content": "Hi"}]
            )


@pytest.mark.asyncio
@pytest.mark.parametrize("upstream_state", ["lacks the model", "fails to list"])
async def test_models_falls_back_to_the_configured_model_and_warns(
    upstream_state: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with gateway(ANSWER, api_key="sk-upstream-key") as (root, upstream, _), sdk(root) as client:
        if upstream_state == "lacks the model":
            upstream.models = ["other-model"]
        else:
            upstream.models_reply = Reply(status=500, error="listing broke for sk-upstream-key")
        listed = (await client.models.list()).data
    assert [(m.id, m.created, m.owned_by) for m in listed] == [(MODEL, 0, "rxllm")]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "sk-upstream-key" not in warnings[0], warnings


@pytest.mark.asyncio
async def test_models_on_a_backend_that_cannot_list_is_the_configured_model() -> None:
    app = create_app(load_config({"backend": "scripted", "model": "demo"}, environ={}))
    async with running(app) as root, sdk(root) as client:
        listed = (await client.models.list()).data
    assert [(m.id, m.owned_by) for m in listed] == [("demo", "rxllm")]


@pytest.mark.asyncio
async def test_health() -> None:
    async with (
        gateway(ANSWER) as (root, _, _),
        aiohttp.ClientSession() as http,
        http.get(f"{root}/healthz") as response,
    ):
        health = await response.json()
    assert health["status"] == "ok" and health["active_streams"] == 0


@pytest.mark.asyncio
async def test_in_stream_retries_give_one_answer_and_count_the_attempts_and_usage() -> None:
    first = Reply(deltas=["Fine. ", "It is Celsius. ", "more."], delay=0.01)
    second = Reply(deltas=[" Calm. ", "Done."], usage=(5, 2))
    async with gateway(first, forbid=["Celsius"], retries=1) as (root, upstream, _), sdk(root) as client:
        upstream.enqueue(first, second)
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Fine. Calm. Done."
    finish = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    assert finish.choices[0].finish_reason == "stop"
    assert (finish.model_extra or {})["rxllm"] == {"attempts": 2}
    # The first attempt was cut before it reported usage: only the second's is summed.
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2


@pytest.mark.asyncio
async def test_usage_is_omitted_where_the_upstream_reports_none() -> None:
    app = create_app(load_config({"backend": "scripted", "delay": 0.0}, environ={}))
    async with running(app) as root, sdk(root) as client:
        stream = await client.chat.completions.create(
            model="scripted",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert chunks and all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.asyncio
async def test_the_requirements_factory_is_called_once_per_request() -> None:
    FACTORY_CALLS.clear()
    spec = "tests.gateway_helpers:counting_requirements"
    async with gateway(ANSWER, requirements=spec) as (root, _, _), sdk(root) as client:
        assert len(FACTORY_CALLS) == 1  # once at start-up, to check it
        for _ in range(3):
            completion = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Hi"}]
            )
            assert completion.choices[0].finish_reason == "content_filter"
    assert len(FACTORY_CALLS) == 4 and len({id(r) for r in FACTORY_CALLS}) == 4


@pytest.mark.asyncio
async def test_a_factory_failing_at_request_time_is_an_openai_shaped_500() -> None:
    FACTORY_CALLS.clear()
    spec = "tests.gateway_helpers:fails_after_start_up"
    async with gateway(ANSWER, requirements=spec) as (root, upstream, _), aiohttp.ClientSession() as http:
        for stream in (True, False):
            async with http.post(f"{root}/v1/chat/completions", json=chat_body(stream=stream)) as response:
                assert response.status == 500
                body = await response.json()
                assert body["error"]["code"] == "internal_error"
                assert "RuntimeError" in body["error"]["message"]
        assert upstream.requests == []
