"""Hostile servers: raw loopback sockets that send invalid HTTP, redirect, lie about the
content type, echo secrets and terminal escapes, send endless frames, stall, or fail
before answering. Every fault must be a typed ``BackendError`` that shows no secret and
no raw server control character, keeps the text that arrived, and never hangs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from typing import Any

import pytest

from backends import (
    BackendError,
    BackendUnreachableError,
    IncompleteStreamError,
    MalformedStreamError,
    OllamaBackend,
    OpenAIBackend,
    ServerError,
)
from backends._http import HttpBackend
from backends.errors import (
    ProtocolError,
    RateLimitError,
    RedirectError,
    RequestTimeoutError,
    UnexpectedContentTypeError,
    redact_url,
    server_text,
)
from engine import ModelOption, ModelOutputThunk, SimpleContext
from tests.hostile import RawRequest, RawServer, http_response, ndjson_lines, openai_chunk, reset, sse_events

KINDS = ["ollama", "openai"]
USER, PASSWORD, API_KEY = "alice", "hunter2-pw", "sk-test-SECRET-key-123"
SECRETS = (PASSWORD, API_KEY, "aHVudGVy", "YWxpY2U6")  # base64 of the Basic credentials starts "YWxpY2U6"


def make_backend(kind: str, server: RawServer, **kw: Any) -> HttpBackend:
    """A backend whose base URL carries credentials ("openai-key": an API key instead)."""
    root = server.root.replace("http://", f"http://{USER}:{PASSWORD}@")
    kw.setdefault("idle_timeout", 5.0)
    if kind == "ollama":
        return OllamaBackend("m", base_url=root, **kw)
    if kind == "openai-key":
        return OpenAIBackend("m", base_url=server.root + "/v1", api_key=API_KEY, **kw)
    return OpenAIBackend("m", base_url=root + "/v1", **kw)


def test_credentials_in_the_url_and_an_api_key_are_refused_together() -> None:
    with pytest.raises(ValueError, match="api_key"):
        OpenAIBackend("m", base_url=f"http://{USER}:{PASSWORD}@127.0.0.1:1/v1", api_key=API_KEY)


async def run(backend: HttpBackend, stream: bool = True) -> ModelOutputThunk[str]:
    thunk, _ = await backend.generate_from_context(
        "Say hello.", SimpleContext(), model_options={ModelOption.STREAM: stream}
    )
    return thunk


async def fails(backend: HttpBackend, stream: bool = True) -> tuple[BackendError, ModelOutputThunk[str]]:
    thunk = await run(backend, stream)
    async with asyncio.timeout(10):
        with pytest.raises(BackendError) as info:
            await thunk.avalue()
    return info.value, thunk


def assert_shows_no_secret(error: BaseException) -> None:
    """No secret, raw control character or aiohttp object anywhere in the error or its chain."""
    shown = "".join(traceback.format_exception(error)) + repr(error) + str(vars(error))
    for secret in SECRETS:
        assert secret not in shown, f"{secret!r} leaked: {shown}"
    assert "\x1b" not in str(error) and "\x07" not in str(error)
    link: BaseException | None = error
    while link is not None:
        assert "aiohttp" not in type(link).__module__, f"an aiohttp exception is chained: {link!r}"
        link = link.__cause__ or link.__context__


def body_for(kind: str, deltas: list[str], *, end: bool = True) -> tuple[bytes, str]:
    """A streaming body with *deltas* and (if *end*) its terminal frame, and its content type."""
    if kind == "ollama":
        frames: list[Any] = [{"message": {"role": "assistant", "content": d}, "done": False} for d in deltas]
        if end:
            frames.append({"message": {"role": "assistant", "content": ""}, "done": True})
        return ndjson_lines(*frames), "application/x-ndjson"
    return sse_events(*[openai_chunk(d) for d in deltas], done=end), "text/event-stream"


# -- invalid HTTP: a typed ProtocolError, no aiohttp exception, no secret ---------------------

INVALID_HTTP = {
    "bad status line": b"HTTP/1.1 2OO OK\r\n\r\n",
    "header over 8 KiB": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
    "bad chunk size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nhello\r\n",
    "not HTTP at all": b"\x00\x01SSH-2.0-OpenSSH\r\n\r\n",
}


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", sorted(INVALID_HTTP))
async def test_invalid_http_is_a_protocol_error_without_secrets(kind: str, case: str) -> None:
    async with (
        RawServer(INVALID_HTTP[case]) as server,
        make_backend(kind, server) as backend,
    ):
        error, _ = await fails(backend)
    assert isinstance(error, ProtocolError), repr(error)
    assert "valid HTTP" in str(error) and f"***@127.0.0.1:{server.port}" in str(error)
    assert error.cause is not None
    assert_shows_no_secret(error)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_a_reset_before_the_answer_and_mid_stream_are_typed(kind: str) -> None:
    body, ctype = body_for(kind, ["Hel", "lo"], end=False)

    async def reset_at_once(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        reset(writer)

    async def reset_mid_stream(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n\r\n"
        writer.write(head.encode() + f"{len(body):x}\r\n".encode() + body + b"\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        reset(writer)

    async with (
        RawServer(reset_at_once) as server,
        make_backend(kind, server) as backend,
    ):
        error, _ = await fails(backend)
    assert isinstance(error, BackendUnreachableError), repr(error)
    assert_shows_no_secret(error)
    async with (
        RawServer(reset_mid_stream) as server,
        make_backend(kind, server) as backend,
    ):
        error, thunk = await fails(backend)
    assert isinstance(error, IncompleteStreamError), repr(error)
    assert thunk.text == "Hello" and "after 2 deltas" in str(error)
    assert_shows_no_secret(error)


# -- redirects are not followed --------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "status", ["301 Moved Permanently", "307 Temporary Redirect", "308 Permanent Redirect"]
)
async def test_a_redirect_is_an_error_naming_the_redacted_location(kind: str, status: str) -> None:
    async with RawServer(b"") as elsewhere:
        location = f"http://bob:{PASSWORD}@127.0.0.1:{elsewhere.port}/steal?key={API_KEY}"
        async with (
            RawServer(http_response(status=status, headers=[("Location", location)])) as server,
            make_backend(kind, server, retries=3, retry_backoff=0.0) as backend,
        ):
            error, _ = await fails(backend)
        assert elsewhere.requests == []  # the prompt and credentials went nowhere else
    assert isinstance(error, RedirectError), repr(error)
    assert error.status == int(status[:3]) and len(server.requests) == 1
    assert error.location == f"http://***@127.0.0.1:{elsewhere.port}/steal?key=***"
    assert error.location in str(error) and "base_url" in str(error)
    assert_shows_no_secret(error)


# -- secrets ----------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", [*KINDS, "openai-key"])
async def test_credentials_are_sent_but_shown_nowhere(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    # The server echoes the backend's own secret, raw and inside a URL.
    secret = API_KEY if kind == "openai-key" else f"{USER}:{PASSWORD}"
    echo = (
        f"denied for {secret}, password {PASSWORD if kind != 'openai-key' else API_KEY} at http://{secret}@x/"
    )
    answer = http_response(f'{{"error": "{echo}"}}'.encode(), status="401 Unauthorized")
    caplog.set_level(logging.DEBUG)
    async with RawServer(answer) as server:
        backend = make_backend(kind, server)
        async with backend:
            error, thunk = await fails(backend)
        assert (
            server.requests[0]
            .headers["authorization"]
            .startswith("Bearer" if kind == "openai-key" else "Basic")
        )
    shown = [repr(backend), backend.base_url, str(thunk.generation.extra), caplog.text]
    for text in shown:
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} leaked in {text!r}"
    assert ("***@127.0.0.1" in repr(backend)) is (kind != "openai-key") and "***" in str(error)
    assert_shows_no_secret(error)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_an_unreachable_server_shows_no_credentials(kind: str) -> None:
    async with RawServer(b"") as server:
        pass  # closed: nothing listens on its port any more
    async with make_backend(kind, server) as backend:
        error, _ = await fails(backend)
    assert isinstance(error, BackendUnreachableError)
    assert f"***@127.0.0.1:{server.port}" in str(error) and error.url is not None and "***" in error.url
    assert_shows_no_secret(error)


def test_redact_url_hides_userinfo_and_secret_query_values() -> None:
    assert redact_url("http://u:p@h:1/v1") == "http://***@h:1/v1"
    assert redact_url("https://tok@h/") == "https://***@h/"
    assert redact_url("see http://u:p@ss@h/a@b?api_key=k&x=1") == "see http://***@h/a@b?api_key=***&x=1"
    assert redact_url("http://h:1/v1") == "http://h:1/v1"


# -- server text is neutralised and bounded --------------------------------------------------

HOSTILE_TEXT = "boom \x1b[2J\x1b[31mred\x1b]0;pwned\x07 bell\x07 nul\x00 \u202eevil\r\nnext " + "A" * 100_000


def test_server_text_drops_escapes_and_bounds_the_length() -> None:
    shown = server_text(HOSTILE_TEXT)
    assert shown.startswith("boom red bell\\x07 nul\\x00 \\u202eevil next AAA")
    assert len(shown) < 300 and "more characters" in shown
    for ch in "\x1b\x07\x00\u202e\r\n":
        assert ch not in shown


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", ["status body", "stream error frame", "malformed line", "reason phrase"])
async def test_server_text_is_neutralised_everywhere_it_is_shown(kind: str, where: str) -> None:
    if where == "status body":
        answer = http_response(
            json.dumps({"error": HOSTILE_TEXT}).encode(), status="500 Internal Server Error"
        )
    elif where == "reason phrase":
        answer = http_response(b"", status="500 \x1b[31mred\x07")
    elif where == "malformed line":
        body = HOSTILE_TEXT.encode() + b"\n\n"
        answer = http_response(body, content_type="text/event-stream" if kind == "openai" else None)
    elif kind == "ollama":
        answer = http_response(ndjson_lines({"error": HOSTILE_TEXT}), content_type="application/x-ndjson")
    else:
        frame = b"data: " + json.dumps({"error": {"message": HOSTILE_TEXT}}).encode() + b"\n\n"
        answer = http_response(frame, content_type="text/event-stream")
    async with (
        RawServer(answer) as server,
        make_backend(kind, server) as backend,
    ):
        error, _ = await fails(backend)
    message = str(error)
    assert len(message) < 1200, message
    for ch in "\x1b\x07\x00\u202e":
        assert ch not in message
        for value in vars(error).values():
            assert not isinstance(value, str) or ch not in value
    assert_shows_no_secret(error)


# -- memory bounds ----------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_one_endless_frame_is_capped_by_max_frame_bytes(kind: str) -> None:
    # OpenAI: one event of endless short data: lines; Ollama: one endless line.
    first, _ = body_for(kind, ["Hi"], end=False)
    piece = b"data: " + b"x" * 1000 + b"\n" if kind == "openai" else b"y" * 1000

    async def with_first(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        ctype = "application/x-ndjson" if kind == "ollama" else "text/event-stream"
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\n\r\n".encode() + first)
        await writer.drain()
        for _ in range(4000):  # ~4 MiB, far past the 64 KiB limit of the test
            writer.write(piece)
            await writer.drain()

    async with (
        RawServer(with_first) as server,
        make_backend(kind, server, max_frame_bytes=64 * 1024) as backend,
    ):
        error, thunk = await fails(backend)
    assert isinstance(error, MalformedStreamError), repr(error)
    assert "larger than 65536 bytes" in str(error) and "max_frame_bytes" in str(error)
    assert thunk.text == "Hi"  # what arrived before the oversized frame is kept


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_a_non_streaming_body_is_capped_by_max_body_bytes(kind: str) -> None:
    answer = http_response(b'{"message": "' + b"z" * 300_000 + b'"}')
    async with (
        RawServer(answer) as server,
        make_backend(kind, server, max_body_bytes=100_000) as backend,
    ):
        error, _ = await fails(backend, stream=False)
    assert isinstance(error, MalformedStreamError), repr(error)
    assert "larger than 100000 bytes" in str(error) and "max_body_bytes" in str(error)


# -- protocol strictness where it hurts users ----------------------------------------------


@pytest.mark.asyncio
async def test_an_openai_stream_with_finish_reason_but_no_done_is_complete() -> None:
    body = sse_events(openai_chunk("Hel"), openai_chunk("lo."), openai_chunk(None, "stop"), done=False)
    async with (
        RawServer(http_response(body, content_type="text/event-stream")) as server,
        make_backend("openai", server) as backend,
    ):
        thunk = await run(backend)
        assert await thunk.avalue() == "Hello."
    assert thunk.generation.done_reason == "stop"


@pytest.mark.asyncio
async def test_an_openai_stream_without_finish_reason_or_done_stays_incomplete() -> None:
    body = sse_events(openai_chunk("Hel"), openai_chunk("lo."), done=False)
    async with (
        RawServer(http_response(body, content_type="text/event-stream")) as server,
        make_backend("openai", server) as backend,
    ):
        error, thunk = await fails(backend)
    assert isinstance(error, IncompleteStreamError) and thunk.text == "Hello."


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("stream", [True, False])
async def test_a_200_html_page_is_not_an_endpoint(kind: str, stream: bool) -> None:
    page = b"<html><head><title>Sign in \x1b[31m</title></head><body>proxy login</body></html>"
    async with (
        RawServer(http_response(page, content_type="text/html; charset=utf-8")) as server,
        make_backend(kind, server) as backend,
    ):
        error, _ = await fails(backend, stream)
    assert isinstance(error, UnexpectedContentTypeError), repr(error)
    assert error.content_type == "text/html; charset=utf-8"
    expected = "not an Ollama API" if kind == "ollama" else "not an OpenAI-compatible API"
    assert expected in str(error) and f"***@127.0.0.1:{server.port}" in str(error)
    assert "context window" not in str(error)
    assert_shows_no_secret(error)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_error_messages_count_the_deltas_kept(kind: str) -> None:
    deltas = ["a", "b", "c", "d"]
    body, ctype = body_for(kind, deltas, end=False)
    if kind == "ollama":
        body += ndjson_lines({"error": "out of memory"})
    else:
        body += b"data: " + json.dumps({"error": {"message": "out of memory"}}).encode() + b"\n\n"
    # The four deltas and the error frame arrive in one write.
    async with (
        RawServer(http_response(body, content_type=ctype)) as server,
        make_backend(kind, server) as backend,
    ):
        error, thunk = await fails(backend)
    assert isinstance(error, ServerError) and thunk.text == "abcd"
    assert "after 4 deltas" in str(error), str(error)


# -- deadlines and retries --------------------------------------------------------------------


async def trickle(request: RawRequest, writer: asyncio.StreamWriter, *, kind: str) -> None:
    """A stream that sends a delta every 20 ms, forever."""
    _, ctype = body_for(kind, [])
    writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\n\r\n".encode())
    while True:
        body, _ = body_for(kind, ["x"], end=False)
        writer.write(body)
        await writer.drain()
        await asyncio.sleep(0.02)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_timeout_is_a_deadline_for_the_whole_request(kind: str) -> None:
    async def answer(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        await trickle(request, writer, kind=kind)

    async with (
        RawServer(answer) as server,
        make_backend(kind, server, timeout=0.4, idle_timeout=5.0) as backend,
    ):
        error, thunk = await fails(backend)
    assert isinstance(error, RequestTimeoutError), repr(error)
    assert error.timeout == 0.4 and "timeout=0.4" in str(error)
    assert thunk.text and set(thunk.text) == {"x"}  # the text that arrived is kept
    assert thunk.generation.connection_closed_at is not None


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout"):
        OllamaBackend("m", base_url="http://127.0.0.1:1", timeout=0)
    with pytest.raises(ValueError, match="retries"):
        OllamaBackend("m", base_url="http://127.0.0.1:1", retries=-1)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "status", ["429 Too Many Requests", "502 Bad Gateway", "503 Busy", "504 Gateway Timeout"]
)
async def test_retries_before_any_delta_honour_retry_after(kind: str, status: str) -> None:
    body, ctype = body_for(kind, ["Hel", "lo"])
    busy = http_response(b'{"error": "busy"}', status=status, headers=[("Retry-After", "0.2")])
    async with (
        RawServer(busy, busy, http_response(body, content_type=ctype)) as server,
        make_backend(kind, server, retries=2, retry_backoff=0.01) as backend,
    ):
        loop = asyncio.get_running_loop()
        started = loop.time()
        thunk = await run(backend)
        assert await thunk.avalue() == "Hello"
        elapsed = loop.time() - started
    assert len(server.requests) == 3 and thunk.generation.extra["retries"] == 2
    assert elapsed >= 0.4  # both waits honoured Retry-After (0.2 s each)
    assert server.requests[2].json == server.requests[0].json


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_retries_are_off_by_default_and_the_error_carries_retry_after(kind: str) -> None:
    busy = http_response(b'{"error": "busy"}', status="503 Busy", headers=[("Retry-After", "7")])
    async with (
        RawServer(busy) as server,
        make_backend(kind, server) as backend,
    ):
        error, _ = await fails(backend)
    assert isinstance(error, ServerError) and error.retry_after == 7.0 and len(server.requests) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_a_retry_after_beyond_the_limit_is_not_waited_for(kind: str) -> None:
    busy = http_response(b"{}", status="429 Too Many Requests", headers=[("Retry-After", "3600")])
    async with (
        RawServer(busy) as server,
        make_backend(kind, server, retries=5) as backend,
    ):
        error, _ = await fails(backend)
    assert isinstance(error, RateLimitError) and error.retry_after == 3600.0 and len(server.requests) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_a_connection_failure_before_the_answer_is_retried(kind: str) -> None:
    body, ctype = body_for(kind, ["ok"])

    async def drop(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        reset(writer)

    async with (
        RawServer(drop, http_response(body, content_type=ctype)) as server,
        make_backend(kind, server, retries=1, retry_backoff=0.01) as backend,
    ):
        thunk = await run(backend)
        assert await thunk.avalue() == "ok"
    assert len(server.requests) == 2


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_a_generation_that_has_started_is_never_retried(kind: str) -> None:
    body, ctype = body_for(kind, ["Hel"], end=False)

    async def one_delta_then_reset(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\n\r\n".encode() + body)
        await writer.drain()
        await asyncio.sleep(0.05)
        reset(writer)

    async with (
        RawServer(one_delta_then_reset) as server,
        make_backend(kind, server, retries=3, retry_backoff=0.01) as backend,
    ):
        error, thunk = await fails(backend)
    assert isinstance(error, IncompleteStreamError) and thunk.text == "Hel"
    assert len(server.requests) == 1
