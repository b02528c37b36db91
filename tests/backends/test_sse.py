"""Incremental framing (backends.sse): lines and server-sent events, fed in every possible slicing."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends import sse as sse_module
from backends.sse import EventTooLargeError, LineSplitter, LineTooLongError, SSEDecoder, SSEEvent

UNICODE_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)


def feed_in_pieces(decoder: SSEDecoder, data: bytes, cuts: list[int]) -> list[SSEEvent]:
    events: list[SSEEvent] = []
    start = 0
    for cut in sorted(set(cuts)):
        events += decoder.feed(data[start:cut])
        start = cut
    events += decoder.feed(data[start:])
    return events + decoder.close()


def test_the_basic_openai_stream() -> None:
    body = b'data: {"a": 1}\n\ndata: {"b": 2}\n\ndata: [DONE]\n\n'
    assert [e.data for e in SSEDecoder().feed(body)] == ['{"a": 1}', '{"b": 2}', "[DONE]"]


def test_multi_line_data_comments_event_id_retry_and_unknown_fields() -> None:
    body = (
        b": this is a comment\n"
        b"event: update\n"
        b"id: 7\n"
        b"retry: 1500\n"
        b"foo: ignored\n"
        b"data: first\n"
        b"data:second\n"
        b"data:  two spaces keep one\n"
        b"\n"
        b"data\n"
        b"\n"
    )
    decoder = SSEDecoder()
    first, second = decoder.feed(body)
    assert first == SSEEvent(data="first\nsecond\n two spaces keep one", event="update", id="7", retry=1500)
    # A field name alone is an empty value; the event type resets, the last id carries over.
    assert second == SSEEvent(data="", event="message", id="7", retry=1500)
    assert decoder.comments == 1


def test_crlf_cr_and_lf_line_ends_all_work() -> None:
    for eol in (b"\r\n", b"\r", b"\n"):
        body = b"data: x" + eol + b"data: y" + eol + eol + b"data: [DONE]" + eol + eol
        assert [e.data for e in SSEDecoder().feed(body)] == ["x\ny", "[DONE]"], eol


def test_a_crlf_split_between_two_reads_is_one_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\r") == []
    assert decoder.feed(b"\n\r") == [SSEEvent("x")]
    assert decoder.feed(b"\ndata: y\r\n\r\n") == [SSEEvent("y")]


def test_a_leading_bom_is_dropped_and_empty_events_are_not_dispatched() -> None:
    decoder = SSEDecoder()
    assert decoder.feed("\ufeffdata: a\n\n\n\nevent: x\n\n".encode()) == [SSEEvent("a")]


def test_at_the_end_an_event_missing_its_blank_line_is_still_dispatched_but_a_partial_line_is_not() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: [DONE]\n") == []
    assert decoder.close() == [SSEEvent("[DONE]")]
    decoder = SSEDecoder()
    assert decoder.feed(b"data: [DO") == []
    assert decoder.pending
    assert decoder.close() == []


def test_an_overlong_line_is_an_error_not_unbounded_memory() -> None:
    decoder = SSEDecoder(max_line_bytes=64)
    with pytest.raises(LineTooLongError) as info:
        decoder.feed(b"data: " + b"x" * 100)
    assert info.value.head.startswith(b"data: xxx")


@settings(max_examples=150, deadline=None)
@given(
    payloads=st.lists(UNICODE_TEXT, min_size=1, max_size=5),
    eol=st.sampled_from(["\n", "\r\n", "\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
def test_any_slicing_of_the_body_gives_the_same_events(
    payloads: list[str], eol: str, cuts: list[int]
) -> None:
    # Each payload may contain line breaks: it is sent as several data: lines.
    body = ""
    expected = []
    for text in payloads:
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        body += "".join(f"data: {line}{eol}" for line in lines) + eol
        expected.append("\n".join(lines))
    data = body.encode()
    events = feed_in_pieces(SSEDecoder(), data, [c for c in cuts if c <= len(data)])
    assert [e.data for e in events] == expected


def test_every_single_byte_offset_including_inside_multibyte_characters() -> None:
    data = 'data: {"content": "héllo wörld 你好 🎉"}\r\n\r\ndata: [DONE]\r\n\r\n'.encode()
    expected = ['{"content": "héllo wörld 你好 🎉"}', "[DONE]"]
    for offset in range(len(data) + 1):
        assert [e.data for e in feed_in_pieces(SSEDecoder(), data, [offset])] == expected, offset
    # and one byte at a time
    decoder = SSEDecoder()
    events = [event for i in range(len(data)) for event in decoder.feed(data[i : i + 1])]
    assert [e.data for e in events] == expected


def test_line_splitter_for_ndjson() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b'{"a":1}\r\n{"b"') == [b'{"a":1}']
    assert splitter.feed(b":2}\n\n") == [b'{"b":2}', b""]
    assert splitter.feed("é".encode()[:1]) == []
    assert splitter.feed("é".encode()[1:] + b"\n") == ["é".encode()]
    assert splitter.feed(b"tail\r") == []
    assert splitter.close() == b"tail"
    assert splitter.close() is None
    with pytest.raises(LineTooLongError):
        LineSplitter(max_line_bytes=8).feed(b"123456789")


@settings(max_examples=100, deadline=None)
@given(
    lines=st.lists(UNICODE_TEXT.map(lambda s: s.replace("\n", " ").replace("\r", " ")), max_size=6),
    eol=st.sampled_from(["\n", "\r\n"]),
    data=st.data(),
)
def test_line_splitter_any_slicing(lines: list[str], eol: str, data: st.DataObject) -> None:
    body = "".join(line + eol for line in lines).encode()
    ends = [i + 1 for i, byte in enumerate(body) if byte == 0x0A]  # whole-line pieces: the usual case
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)) | st.sampled_from(ends or [0]), max_size=10)))
    splitter = LineSplitter()
    out: list[bytes] = []
    start = 0
    for cut in cuts:
        out += splitter.feed(body[start:cut])
        start = cut
    out += splitter.feed(body[start:])
    assert splitter.close() is None
    assert [line.decode() for line in out] == lines


def test_an_event_of_endless_short_data_lines_is_capped() -> None:
    decoder = SSEDecoder(max_event_bytes=1000)
    with pytest.raises(EventTooLargeError) as info:
        for _ in range(100):
            decoder.feed(b"data: " + b"x" * 50 + b"\n")
    assert info.value.limit == 1000 and info.value.head.startswith(b"xxx")


def test_events_before_an_oversized_one_are_handed_on_first() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    events = decoder.feed(b"data: ok\n\n" + b"data: " + b"y" * 200 + b"\n")
    assert [e.data for e in events] == ["ok"]
    with pytest.raises(EventTooLargeError):
        decoder.feed(b"\n")
    with pytest.raises(EventTooLargeError):
        decoder.close()


def test_dispatched_events_do_not_count_towards_the_cap() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    for _ in range(50):
        assert [e.data for e in decoder.feed(b"data: " + b"z" * 60 + b"\n\n")] == ["z" * 60]


class _CountingEol:
    """A line-end pattern that counts the bytes its searches are given to read."""

    def __init__(self, pattern: re.Pattern[bytes]) -> None:
        self.pattern = pattern
        self.read = 0

    def finditer(self, data: bytearray, pos: int = 0) -> Iterator[re.Match[bytes]]:
        self.read += len(data) - pos
        return self.pattern.finditer(data, pos)


@pytest.mark.parametrize(("cr_is_eol", "pattern"), [(False, "_EOL_LF"), (True, "_EOL_ANY")])
def test_a_long_line_in_many_pieces_is_read_once(
    monkeypatch: pytest.MonkeyPatch, cr_is_eol: bool, pattern: str
) -> None:
    # A 4 MiB line (under the 8 MiB cap) in 4 KiB pieces, as a hostile or broken server may
    # send it: searching the whole buffer for a line end on every piece reads ~2 GiB; the
    # new bytes alone, 4 MiB.
    counting = _CountingEol(getattr(sse_module, pattern))
    monkeypatch.setattr(sse_module, pattern, counting)
    splitter = LineSplitter(cr_is_eol=cr_is_eol)
    piece = b"x" * 4096
    assert splitter.feed(b"start") == []  # a pending head, so every piece takes the buffered path
    for _ in range(1024):
        assert splitter.feed(piece) == []
    assert splitter.feed(b"\r\nnext") == [b"start" + piece * 1024]
    assert counting.read <= 2 * (5 + 1024 * len(piece) + 6)
