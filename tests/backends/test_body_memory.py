"""Non-streaming bodies: capped at 8 MiB by default, refused as they are read, and read in
about their own size of memory (at most 1.25 times the body plus 1 MiB of traced memory).

The body is decoded as it arrives (``backends._json_body``); its parse must equal
``json.loads`` of the whole body for any document and any cut into pieces.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import tracemalloc
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backends import MalformedStreamError, OllamaBackend, OpenAIBackend
from backends._http import HttpBackend
from backends._json_body import JsonBodyDecoder
from engine import SimpleContext
from tests.hostile import RawRequest, RawServer

MiB = 1024 * 1024
KINDS = ["ollama", "openai"]


def answer_body(kind: str, content: str) -> bytes:
    """A non-streaming chat answer as the server sends it."""
    message = {"role": "assistant", "content": content}
    if kind == "openai":
        obj: dict[str, Any] = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
        }
    else:
        obj = {"model": "m", "message": message, "done": True, "done_reason": "stop", "eval_count": 5}
    return json.dumps(obj).encode()


def sending(body: bytes, *, length: bool = True) -> Any:
    """A server answer writing *body* in 64 KiB writes (so the server side buffers little)."""

    async def answer(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        size = f"Content-Length: {len(body)}\r\n" if length else ""
        writer.write(
            f"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\n{size}\r\n".encode()
        )
        view = memoryview(body)
        for i in range(0, len(body), 64 * 1024):
            writer.write(view[i : i + 64 * 1024])
            await writer.drain()

    return answer


def backend_for(kind: str, server: RawServer, **kw: Any) -> HttpBackend:
    if kind == "ollama":
        return OllamaBackend("m", base_url=server.root, **kw)
    return OpenAIBackend("m", base_url=server.root + "/v1", **kw)


async def peak_while_reading(backend: HttpBackend) -> tuple[str, int]:
    """The answer's text, and the peak traced memory above the start while reading it."""
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        thunk, _ = await backend.generate_from_context("Hi.", SimpleContext())
        text = await thunk.avalue()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return text, peak - base


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("script", ["latin-1", "cjk"])
async def test_a_large_body_peaks_at_most_one_and_a_quarter_its_size(kind: str, script: str) -> None:
    # A 6 to 7 MiB body (under the default cap), with escapes ("quotes", tabs, newlines, \u00e9).
    line = 'A line of text with "quotes", a tab\t and é.\n' if script == "latin-1" else "雪が降る「夜」\n"
    size = 6 * MiB if script == "latin-1" else MiB  # JSON escapes each CJK character in 6 bytes
    content = (line * (size // len(line)))[:size]
    body = answer_body(kind, content)
    async with RawServer(sending(body)) as server, backend_for(kind, server) as backend:
        text, peak = await peak_while_reading(backend)
    assert text == content
    # Before, the body, its decoded text and the parsed content coexisted: 3.1 times the body.
    # The rule: at most 1.25 times the body (plus 1 MiB), or the answer's own size plus a
    # quarter of the body where the answer is the larger (text whose str outweighs its JSON).
    # How much a read buffers at once is the event loop's choice (uvloop reads larger pieces).
    bound = max(1.25 * len(body), sys.getsizeof(text) + 0.25 * len(body))
    assert peak <= bound + MiB, f"peak {peak / MiB:.1f} MiB for a {len(body) / MiB:.1f} MiB body"


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_the_default_cap_is_8_mib_and_an_explicit_one_raises_it(kind: str) -> None:
    body = answer_body(kind, "z" * (8 * MiB))
    async with RawServer(sending(body)) as server:
        async with backend_for(kind, server) as backend:
            thunk, _ = await backend.generate_from_context("Hi.", SimpleContext())
            with pytest.raises(MalformedStreamError, match=r"larger than 8388608 bytes.*max_body_bytes="):
                await thunk.avalue()
        async with backend_for(kind, server, max_body_bytes=9 * MiB) as backend:
            thunk, _ = await backend.generate_from_context("Hi.", SimpleContext())
            assert await thunk.avalue() == "z" * (8 * MiB)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_an_endless_body_is_refused_as_it_is_read(kind: str) -> None:
    written = 0

    async def endless(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\n\r\n")
        writer.write(b'{"message": {"content": "')
        piece = b"y" * (64 * 1024)
        while written < 64 * MiB:
            writer.write(piece)
            await writer.drain()
            written += len(piece)

    async with RawServer(endless) as server, backend_for(kind, server, max_body_bytes=MiB) as backend:
        thunk, _ = await backend.generate_from_context("Hi.", SimpleContext())
        async with asyncio.timeout(30):
            with pytest.raises(MalformedStreamError, match="larger than 1048576 bytes"):
                await thunk.avalue()
    assert written < 16 * MiB  # the client stopped reading (and closed) near the cap


# -- the incremental decoder equals json.loads ------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def decode_in_pieces(data: bytes, cuts: list[int], long_string: int) -> Any:
    decoder = JsonBodyDecoder(long_string=long_string)
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    for start, end in itertools.pairwise(bounds):
        decoder.feed(data[start:end])
    return decoder.close()


@given(
    document=JSON,
    ascii_only=st.booleans(),
    indent=st.sampled_from([None, 1]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    long_string=st.integers(min_value=0, max_value=16),
)
def test_decoding_in_pieces_equals_json_loads(
    document: Any, ascii_only: bool, indent: int | None, cuts: list[int], long_string: int
) -> None:
    data = json.dumps(document, ensure_ascii=ascii_only, indent=indent).encode("utf-8", "surrogatepass")
    try:
        expected = json.loads(data)
    except ValueError:  # a lone surrogate written raw: not UTF-8, refused by both
        with pytest.raises(ValueError):
            decode_in_pieces(data, cuts, long_string)
        return
    assert decode_in_pieces(data, cuts, long_string) == expected


@given(
    document=JSON,
    position=st.integers(min_value=0),
    insert=st.sampled_from(['"', "\\", "\\u12", "\\uZZZZ", "\x01", "}", ",", "\\ud83d", "x", ""]),
    cut=st.integers(min_value=0, max_value=200),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
    long_string=st.integers(min_value=0, max_value=16),
)
def test_a_damaged_document_is_refused_exactly_when_json_loads_refuses_it(
    document: Any, position: int, insert: str, cut: int, cuts: list[int], long_string: int
) -> None:
    text = json.dumps(document)
    position %= len(text) + 1
    damaged = (text[:position] + insert + text[position:])[: max(len(text) - cut, 0)]
    data = damaged.encode("utf-8", "surrogatepass")
    try:
        expected = json.loads(damaged)
    except ValueError:
        with pytest.raises(ValueError):
            decode_in_pieces(data, cuts, long_string)
        return
    assert decode_in_pieces(data, cuts, long_string) == expected


def test_a_surrogate_pair_escape_cut_between_its_halves_is_one_character() -> None:
    data = json.dumps({"content": "ab😀" * 5}).encode()  # "\ud83d\ude00" escapes
    for cut in range(len(data)):
        assert decode_in_pieces(data, [cut], long_string=2) == {"content": "ab😀" * 5}
