"""Incremental framing of HTTP response bodies: lines (NDJSON) and server-sent events.

Both decoders take the body in whatever pieces the network delivers (a frame split
anywhere, even inside a multi-byte UTF-8 character) and return only complete units.
They split on bytes (``\\r`` and ``\\n`` never occur inside a UTF-8 sequence) and decode
whole lines, so a character cut in two by a TCP write is decoded once it is whole.

:class:`SSEDecoder` follows the WHATWG "server-sent events" parsing rules: lines end
with CRLF, LF or CR (a CRLF split across two reads counts once); a leading BOM is
dropped; ``:`` lines are comments; ``data:`` lines accumulate (joined with ``\\n``)
until a blank line dispatches the event; ``event:``, ``id:`` and ``retry:`` are kept;
unknown fields are ignored; one space after the colon is removed. One deliberate
leniency: at the end of the body an event whose ``data:`` lines were complete but
which lacked its blank line is still dispatched (some servers omit the last one).
"""

from __future__ import annotations

import re

import attrs

__all__ = ["EventTooLargeError", "LineSplitter", "LineTooLongError", "SSEDecoder", "SSEEvent"]

DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024

_EOL_LF = re.compile(rb"\n")
_EOL_ANY = re.compile(rb"\r\n|\r|\n")


class LineTooLongError(ValueError):
    """A line grew past ``max_line_bytes`` without ending; ``head`` holds its first bytes."""

    what = "a line"

    def __init__(self, limit: int, head: bytes) -> None:
        super().__init__(f"{self.what} of the response body is larger than {limit} bytes")
        self.limit = limit
        self.head = head


class EventTooLargeError(LineTooLongError):
    """The ``data:`` lines of one server-sent event grew past ``max_event_bytes``."""

    what = "an event"


class LineSplitter:
    """Splits a byte stream into lines (without their terminators).

    With ``cr_is_eol=False`` (NDJSON) lines end at ``\\n`` and one trailing ``\\r`` is
    stripped; with ``cr_is_eol=True`` (SSE) a lone ``\\r`` ends a line too.
    """

    __slots__ = ("_buf", "_cr_is_eol", "_max", "_skip_lf")

    def __init__(self, *, cr_is_eol: bool = False, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self._buf = bytearray()
        self._cr_is_eol = cr_is_eol
        self._max = max_line_bytes
        self._skip_lf = False

    def feed(self, data: bytes) -> list[bytes]:
        """Add *data*; return the lines it completed, oldest first."""
        if self._skip_lf and data:
            # The previous piece ended with "\r": a "\n" here is the rest of that CRLF.
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        buf = self._buf
        if not buf and type(data) is bytes and not (self._cr_is_eol and b"\r" in data):
            # The usual piece: whole lines with nothing pending (a server's write per frame).
            # One split, no regex and no copy through the buffer: a third of a frame's cost.
            lines = data.split(b"\n")
            buf += lines.pop()
            if not self._cr_is_eol and b"\r" in data:
                lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
            if len(buf) > self._max and not lines:
                head = bytes(buf[:200])
                buf.clear()
                raise LineTooLongError(self._max, head)
            return lines
        # What the buffer holds has no line end in it (each found is consumed, a "\r" that
        # ends a piece too): only the new bytes can end a line. Searching from the buffer's
        # start instead would read a long line once per piece (quadratic in its length).
        scan_from = len(buf)
        buf += data
        lines = []
        start = 0
        if self._cr_is_eol:
            end = len(buf)
            for match in _EOL_ANY.finditer(buf, scan_from):
                lines.append(bytes(buf[start : match.start()]))
                start = match.end()
                if match.end() == end and match.group() == b"\r":
                    self._skip_lf = True
        else:
            for match in _EOL_LF.finditer(buf, scan_from):
                stop = match.start()
                if stop > start and buf[stop - 1] == 0x0D:
                    stop -= 1
                lines.append(bytes(buf[start:stop]))
                start = match.end()
        if start:
            del buf[:start]
        if len(buf) > self._max and not lines:  # with lines: hand them on first, raise next time
            head = bytes(buf[:200])
            buf.clear()
            raise LineTooLongError(self._max, head)
        return lines

    def close(self) -> bytes | None:
        """End of body: the unterminated last line, if any bytes are pending."""
        if not self._buf:
            return None
        rest = bytes(self._buf)
        self._buf.clear()
        if not self._cr_is_eol and rest.endswith(b"\r"):
            rest = rest[:-1]
        return rest

    @property
    def pending(self) -> int:
        """Bytes received that are not yet part of a complete line."""
        return len(self._buf)


@attrs.frozen
class SSEEvent:
    """One dispatched server-sent event."""

    data: str
    event: str = "message"
    id: str = ""
    """The last event ID seen so far in the stream (it carries over, as in the spec)."""
    retry: int | None = None
    """The most recent ``retry:`` value in milliseconds, if any was sent."""


class SSEDecoder:
    """Turns body bytes into :class:`SSEEvent` values (see the module docstring for the rules)."""

    __slots__ = (
        "_data",
        "_error",
        "_event",
        "_first",
        "_last_id",
        "_lines",
        "_max_event",
        "_retry",
        "_size",
        "comments",
    )

    def __init__(
        self, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, max_event_bytes: int = DEFAULT_MAX_LINE_BYTES
    ) -> None:
        self._lines = LineSplitter(cr_is_eol=True, max_line_bytes=max_line_bytes)
        self._max_event = max_event_bytes
        self._size = 0  # bytes of data lines pending in the current event
        self._error: EventTooLargeError | None = None  # raised on the next call, after handing on events
        self._data: list[str] = []
        self._event = ""
        self._last_id = ""
        self._retry: int | None = None
        self._first = True
        self.comments = 0
        """Comment lines seen (servers send them as keep-alives)."""

    def feed(self, data: bytes) -> list[SSEEvent]:
        """Add *data*; return the events it completed, oldest first.

        Raises :class:`LineTooLongError` (or :class:`EventTooLargeError`) past a limit;
        events completed before the oversized one are returned first, and the error is
        raised by the next call.
        """
        if self._error is not None:
            raise self._error
        events: list[SSEEvent] = []
        for raw in self._lines.feed(data):
            # The two lines of a usual event inline (a third of its parse): "data: ..." within the
            # size limit, and the blank line that dispatches it. Every other line takes _line.
            if not self._first:
                if not raw:
                    event = self._dispatch()
                    if event is not None:
                        events.append(event)
                    continue
                if raw[:6] == b"data: " and self._size + len(raw) + 1 <= self._max_event:
                    self._size += len(raw) + 1
                    self._data.append(raw[6:].decode("utf-8", errors="replace"))
                    continue
            try:
                event = self._line(raw)
            except EventTooLargeError as exc:
                if not events:
                    raise
                self._error = exc
                return events
            if event is not None:
                events.append(event)
        return events

    def close(self) -> list[SSEEvent]:
        """End of body: the last event if its data lines were complete but its blank line never came."""
        if self._error is not None:
            raise self._error
        events: list[SSEEvent] = []
        self._lines.close()  # an unterminated last line is incomplete: the spec discards it
        event = self._dispatch()
        if event is not None:
            events.append(event)
        return events

    @property
    def pending(self) -> bool:
        """True if part of an event has been received and not yet dispatched."""
        return bool(self._data) or self._lines.pending > 0

    def _line(self, raw: bytes) -> SSEEvent | None:
        line = raw.decode("utf-8", errors="replace")
        if self._first:
            self._first = False
            if line.startswith("\ufeff"):
                line = line[1:]
        if not line:
            return self._dispatch()
        if line[0] == ":":
            self.comments += 1
            return None
        field, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._size += len(raw) + 1
            if self._size > self._max_event:
                # An endless event of short data: lines must not grow memory without bound.
                head = "\n".join(self._data)[:200].encode()
                self._data = []
                self._size = 0
                raise EventTooLargeError(self._max_event, head)
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._last_id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self._data:
            self._size = 0
            self._event = ""
            return None
        event = SSEEvent(
            data="\n".join(self._data), event=self._event or "message", id=self._last_id, retry=self._retry
        )
        self._data = []
        self._size = 0
        self._event = ""
        return event
