"""Behaviour both HTTP backends share, over real loopback sockets against the fake servers.

Every test runs once against FakeOllamaServer + OllamaBackend and once against
FakeOpenAIServer + OpenAIBackend.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from backends import (
    AuthenticationError,
    BackendError,
    BackendUnreachableError,
    BadRequestError,
    ConnectTimeoutError,
    IdleTimeoutError,
    IncompleteStreamError,
    MalformedStreamError,
    ModelNotFoundError,
    OllamaBackend,
    OpenAIBackend,
    RateLimitError,
    ServerError,
)
from backends._http import HttpBackend
from engine import ModelOption, ModelOutputThunk, SimpleContext
from tests.fake_servers import FakeOllamaServer, FakeOpenAIServer, FakeServer, Reply
from tests.helpers import free_port

STREAM = {ModelOption.STREAM: True}
KINDS = ["ollama", "openai"]
UNICODE = ["Hé", "llo ", "wörld ", "你好 ", "🎉", "."]


@contextlib.asynccontextmanager
async def serve(kind: str, reply: Reply | None = None, **backend_kw: Any) -> AsyncIterator[tuple[Any, Any]]:
    server: FakeServer = FakeOllamaServer(reply) if kind == "ollama" else FakeOpenAIServer(reply)
    async with server:
        backend: HttpBackend
        if kind == "ollama":
            backend = OllamaBackend("m", base_url=server.url, **backend_kw)
        else:
            backend = OpenAIBackend("m", base_url=server.url, **backend_kw)
        async with backend:
            yield server, backend


async def generate(backend: Any, stream: bool = True, **options: Any) -> ModelOutputThunk[str]:
    thunk, _ = await backend.generate_from_context(
        "Say hello.", SimpleContext(), model_options={ModelOption.STREAM: stream, **options}
    )
    return thunk  # type: ignore[no-any-return]


async def failure(thunk: ModelOutputThunk[str]) -> BackendError:
    with pytest.raises(BackendError) as info:
        await thunk.avalue()
    # A failed generation is not computed; its text and error stay readable.
    assert not thunk.is_computed() and thunk.value is None and thunk.error is info.value
    return info.value


# -- normal streams ---------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_a_normal_stream_delivers_every_delta_and_records_the_generation(kind: str) -> None:
    async with serve(kind, Reply(deltas=UNICODE)) as (server, backend):
        thunk = await generate(backend)
        assert not thunk.is_computed()
        received = [d async for d in _deltas(thunk)]
        assert received == UNICODE
        assert await thunk.avalue() == "".join(UNICODE)
        generation = thunk.generation
        assert (generation.model, generation.provider) == ("m", kind)
        assert generation.done_reason == "stop"
        assert generation.usage["prompt_tokens"] == 7
        assert generation.usage["completion_tokens"] == len(UNICODE)
        assert generation.deltas_sent == generation.deltas_received == len(UNICODE)
        assert generation.first_delta_at is not None and generation.started_at <= generation.first_delta_at
        assert generation.cancelled_at is None and generation.connection_closed_at is None
        assert generation.extra["http_status"] == 200
        assert backend.generations == [generation]
        [request] = server.requests
        assert request.body["model"] == "m" and request.body["stream"] is True
        assert request.body["messages"] == [{"role": "user", "content": "Say hello."}]
        assert request.completed_at is not None and request.disconnected_at is None


async def _deltas(thunk: ModelOutputThunk[str]) -> AsyncIterator[str]:
    from engine.core.asyncrx import iterate

    async with contextlib.aclosing(iterate(thunk.deltas)) as deltas:
        async for delta in deltas:
            yield delta


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_non_streaming_gives_the_whole_text_as_one_delta(kind: str) -> None:
    async with serve(kind, Reply(deltas=UNICODE, done_reason="length")) as (server, backend):
        thunk = await generate(backend, stream=False)
        assert await thunk.avalue() == "".join(UNICODE)
        assert thunk.generation.deltas_received == 1
        assert thunk.generation.done_reason == "length"
        assert thunk.generation.usage["completion_tokens"] == len(UNICODE)
        assert server.requests[0].body["stream"] is False


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_a_body_split_into_two_writes_at_every_byte_offset(kind: str) -> None:
    async with serve(kind) as (server, backend):
        size = len(b"".join(server.frames(Reply(deltas=UNICODE), "m", _stream_body(kind))))
        replies = [Reply(deltas=UNICODE, split_at=offset) for offset in range(1, size)]
        server.enqueue(*replies)
        texts: list[str] = []
        for start in range(0, len(replies), 100):  # concurrently, 100 at a time
            batch = [await generate(backend) for _ in replies[start : start + 100]]
            texts += await asyncio.gather(*(t.avalue() for t in batch))
        assert texts == ["".join(UNICODE)] * len(replies)
        assert len(server.requests) == size - 1


def _stream_body(kind: str) -> dict[str, Any]:
    return (
        {"model": "m", "stream": True, "stream_options": {"include_usage": True}} if kind == "openai" else {}
    )


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_one_byte_per_write(kind: str) -> None:
    async with serve(kind, Reply(deltas=UNICODE, write_size=1, piece_delay=0.0)) as (server, backend):
        thunk = await generate(backend)
        assert await thunk.avalue() == "".join(UNICODE)
        assert server.requests[0].frames_written > 100  # it really was written byte by byte
        assert thunk.generation.usage["completion_tokens"] == len(UNICODE)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_a_slow_server_streams_incrementally_and_the_idle_timer_restarts_per_frame(kind: str) -> None:
    reply = Reply(deltas=["a", "b", "c", "d", "e"], delay=0.06)
    async with serve(kind, reply, idle_timeout=0.25) as (_, backend):
        thunk = await generate(backend)
        first = await thunk.astream()  # returns as soon as something arrived
        assert first and not thunk.is_computed()
        assert await thunk.avalue() == "abcde"  # 0.3 s in total: more than idle_timeout, never idle that long


# -- the end of a stream ----------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_a_server_that_closes_mid_stream_keeps_the_text_and_says_so(kind: str) -> None:
    async with serve(kind, Reply(deltas=["one ", "two "], ending="close")) as (_, backend):
        thunk = await generate(backend)
        error = await failure(thunk)
        assert isinstance(error, IncompleteStreamError)
        assert thunk.text == "one two "
        assert "after 2 deltas" in str(error) and error.url is not None and error.url in str(error)
        assert thunk.generation.connection_closed_at is not None


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_a_body_that_ends_without_the_terminal_frame_is_incomplete(kind: str) -> None:
    async with serve(kind, Reply(deltas=["one ", "two"], ending="eof")) as (_, backend):
        thunk = await generate(backend)
        error = await failure(thunk)
        assert isinstance(error, IncompleteStreamError)
        assert "terminal frame" in str(error)
        assert thunk.text == "one two"


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_an_error_frame_inside_the_stream_is_a_server_error_after_the_text(kind: str) -> None:
    reply = Reply(deltas=["one ", "two ", "three"], error="CUDA out of memory", error_after=2)
    async with serve(kind, reply) as (_, backend):
        thunk = await generate(backend)
        error = await failure(thunk)
        assert isinstance(error, ServerError) and error.status == 200
        assert "CUDA out of memory" in str(error) and error.server_message == "CUDA out of memory"
        assert thunk.text == "one two "


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_a_garbage_line_is_quoted_truncated_and_the_text_before_it_kept(kind: str) -> None:
    garbage = b"<html>" + b"x" * 1000 + b"</html>\n\n"
    if kind == "openai":
        garbage = b"data: " + garbage  # a line without "data:" is an unknown SSE field, ignored by the spec
    async with serve(kind, Reply(deltas=["ok ", "then"], garbage={1: garbage})) as (_, backend):
        thunk = await generate(backend)
        error = await failure(thunk)
        assert isinstance(error, MalformedStreamError)
        assert error.line.startswith("<html>xxx") and "more characters" in error.line
        assert len(str(error)) < 600
        assert "<html>xxx" in str(error) and "base_url" in str(error)
        assert thunk.text == "ok "


# -- error statuses ---------------------------------------------------------------------


STATUS_CASES = [
    (401, "Incorrect API key provided", AuthenticationError),
    (403, "forbidden", AuthenticationError),
    (404, 'model "m" not found, try pulling it first', ModelNotFoundError),
    (429, "Rate limit reached", RateLimitError),
    (500, "llama runner process has terminated", ServerError),
    (503, "server overloaded", ServerError),
    (400, "invalid option", BadRequestError),
]


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("status", "text", "error_type"), STATUS_CASES)
async def test_each_error_status_maps_to_an_actionable_error(
    kind: str, status: int, text: str, error_type: type[BackendError]
) -> None:
    reply = Reply(status=status, error=text, headers={"Retry-After": "7"} if status == 429 else {})
    async with serve(kind, reply) as (server, backend):
        thunk = await generate(backend)
        error = await failure(thunk)
        assert type(error) is error_type
        assert isinstance(error, BackendError)
        message = str(error)
        assert f"{server.url}" in message and str(status) in message and text in message
        assert getattr(error, "status", None) == status and getattr(error, "server_message", None) == text
        assert thunk.text == "" and thunk.generation.connection_closed_at is not None
        if status == 429:
            assert isinstance(error, RateLimitError) and error.retry_after == 7.0
            assert "retry after 7 s" in message
        if status == 404:
            fix = "ollama pull m" if kind == "ollama" else "/models"
            assert fix in message
        if status == 401:
            assert ("OPENAI_API_KEY" if kind == "openai" else "proxy") in message


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_a_plain_text_5xx_body_is_quoted_truncated(kind: str) -> None:
    async with serve(kind) as (server, backend):
        server.enqueue(Reply(status=502, error="Bad gateway " * 100))
        error = await failure(await generate(backend))
        assert isinstance(error, ServerError) and "more characters" in error.server_message


# -- connection problems and time-outs -------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_an_unreachable_server_names_the_url_and_the_fix(kind: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    backend: HttpBackend = (
        OllamaBackend("m", base_url=url) if kind == "ollama" else OpenAIBackend("m", base_url=url)
    )
    async with backend:
        error = await failure(await generate(backend))
    assert isinstance(error, BackendUnreachableError)
    assert url in str(error)
    assert ("ollama serve" if kind == "ollama" else "base_url") in str(error)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_a_connect_timeout(kind: str) -> None:
    # A listener whose accept queue is full: the kernel drops further SYNs, so connect() hangs.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        await asyncio.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        backend: HttpBackend
        if kind == "ollama":
            backend = OllamaBackend("m", base_url=url, connect_timeout=0.2)
        else:
            backend = OpenAIBackend("m", base_url=url, connect_timeout=0.2)
        async with backend:
            error = await failure(await generate(backend))
        assert isinstance(error, ConnectTimeoutError) and error.timeout == 0.2
        assert url in str(error) and "connect_timeout" in str(error)
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_idle_timeout_between_deltas_keeps_the_text_and_closes_the_connection(kind: str) -> None:
    async with serve(kind, Reply(deltas=["a", "b"], ending="hang"), idle_timeout=0.2) as (server, backend):
        thunk = await generate(backend)
        error = await failure(thunk)
        assert isinstance(error, IdleTimeoutError) and error.timeout == 0.2
        assert "between two frames" in str(error) and "idle_timeout" in str(error)
        assert thunk.text == "ab"
        await server.requests[0].wait_disconnected()
        assert thunk.generation.connection_closed_at is not None


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_idle_timeout_waiting_for_the_headers(kind: str) -> None:
    async with serve(kind, Reply(headers_delay=5.0), idle_timeout=0.2) as (server, backend):
        thunk = await generate(backend)
        error = await failure(thunk)
        assert isinstance(error, IdleTimeoutError) and "waiting for the response headers" in str(error)
        await server.requests[0].wait_disconnected()


# -- pooling and resources ----------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_200_concurrent_generations_share_one_session(kind: str) -> None:
    async with serve(kind, Reply(deltas=["x", "y", "z"], delay=0.01)) as (server, backend):
        assert backend.session is None  # created lazily
        thunks = [await generate(backend) for _ in range(200)]
        session = backend.session
        assert session is not None
        texts = await asyncio.gather(*(t.avalue() for t in thunks))
        assert texts == ["xyz"] * 200
        assert backend.session is session and len(server.requests) == 200
        peak = len({r.peer for r in server.requests})
        assert peak > 1  # they really ran at the same time, on many connections of one pool
        # Finished responses go back to the pool: the next request reuses a connection.
        before = {r.peer for r in server.requests}
        assert await (await generate(backend)).avalue() == "xyz"
        assert server.requests[-1].peer in before


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_max_connections_bounds_the_pool(kind: str) -> None:
    async with serve(kind, Reply(deltas=["x"], delay=0.01), max_connections=2) as (server, backend):
        thunks = [await generate(backend) for _ in range(10)]
        assert await asyncio.gather(*(t.avalue() for t in thunks)) == ["x"] * 10
        assert len({r.peer for r in server.requests}) <= 2


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_the_backend_is_an_async_context_manager_and_aclose_is_final(kind: str) -> None:
    async with serve(kind) as (_, backend):
        assert await (await generate(backend)).avalue() == "Hello, world."
        session = backend.session
    assert session is not None and session.closed
    await backend.aclose()  # idempotent
    with pytest.raises(RuntimeError, match="aclose"):
        await generate(backend)


# -- cancellation reaches the server -------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_cancel_generation_closes_the_connection_at_once(kind: str) -> None:
    async with serve(kind, Reply(deltas=["tok "] * 1000, delay=0.005)) as (server, backend):
        thunk = await generate(backend)
        record = await server.wait_request()
        await record.wait_frames(5)
        verdict = time.perf_counter()
        thunk.cancel()
        generation = thunk.generation
        # Closed in the cancel() call itself, before the reading task runs again (not at GC) ...
        assert generation.connection_closed_at is not None and generation.cancelled_at is None
        await asyncio.sleep(0)
        # ... and the reading task has seen the cancellation one loop turn later.
        assert generation.cancelled_at is not None
        assert verdict <= generation.cancel_requested_at <= generation.connection_closed_at  # type: ignore[operator]
        seen = await record.wait_disconnected(within=2.0)
        assert seen > verdict and seen - verdict < 1.0  # sanity bound: "at once" is measured by the benchmark
        assert record.frames_written_after(verdict) <= 1
        assert record.completed_at is None and record.frames_written < 1000
        assert thunk.is_computed() and thunk.error is None and thunk.value == thunk.text
        sent = generation.deltas_sent
        await asyncio.sleep(0.05)
        assert generation.deltas_sent == sent and len(thunk.text) == sent * 4


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_cancelling_while_waiting_for_the_headers_closes_the_connection(kind: str) -> None:
    async with serve(kind, Reply(headers_delay=5.0)) as (server, backend):
        thunk = await generate(backend)
        record = await server.wait_request()
        thunk.cancel()
        await record.wait_disconnected(within=2.0)
        assert thunk.generation.cancelled_at is not None
        assert thunk.generation.connection_closed_at is not None
        assert thunk.value == ""


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_cancelling_from_inside_a_delta_callback_closes_the_connection(kind: str) -> None:
    # Disposal from inside on_next (what cancel_on_fail does): the reading task closes the generator.
    async with serve(kind, Reply(deltas=["a", "b", "c"] * 100, delay=0.002)) as (server, backend):
        thunk = await generate(backend)
        seen: list[str] = []

        def on_next(delta: str) -> None:
            seen.append(delta)
            if len(seen) == 3:
                thunk.cancel()

        subscription = thunk.deltas.subscribe(on_next)
        record = await server.wait_request()
        await record.wait_disconnected(within=2.0)
        subscription.dispose()
        assert thunk.value == "abc" and thunk.generation.connection_closed_at is not None


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_aclose_during_a_generation_says_so_and_keeps_the_text(kind: str) -> None:
    async with serve(kind, Reply(deltas=["a"] * 500, delay=0.005)) as (server, backend):
        thunk = await generate(backend)
        record = await server.wait_request()
        await record.wait_frames(3)
        while not thunk.text:
            await thunk.astream()
        await backend.aclose()
        error = await failure(thunk)
        assert "aclose()" in str(error) and thunk.text != ""
        await record.wait_disconnected()


def test_the_package_exports_every_error_class() -> None:
    # backends/__init__.py lists its exports by hand: a new error in backends.errors must join them.
    import backends
    import backends.errors

    classes = {
        name
        for name in backends.errors.__all__
        if isinstance(getattr(backends.errors, name), type)
        and issubclass(getattr(backends.errors, name), Exception)
    }
    assert classes <= set(backends.__all__)
    assert all(getattr(backends, name) is getattr(backends.errors, name) for name in classes)
