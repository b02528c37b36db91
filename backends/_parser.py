"""The base of the wire-format parsers: one response body in, text deltas out.

A backend's parser (:class:`StreamParser` subclass) reads a streaming body frame by frame
(NDJSON lines, server-sent events) or a whole non-streaming body, decoded as it arrives
(:class:`~backends._json_body.JsonBodyDecoder`), and fills in the generation record. It
never raises past ``feed``/``close``: the error is kept in ``error``, after the deltas
that arrived before it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, Protocol

from backends._failures import Server, incomplete
from backends._json_body import JsonBodyDecoder
from backends.errors import BackendError, IncompleteStreamError, MalformedStreamError, ServerError
from engine.core.generation import GenerationInfo

__all__ = ["ParsedServer", "StreamParser"]

_HEAD_BYTES = 1000
"""Bytes of a non-streaming body kept to quote in errors."""


class ParsedServer(Server, Protocol):
    """What a parser needs of its backend: :class:`~backends._failures.Server` and the size limits."""

    @property
    def max_frame_bytes(self) -> int:
        """The largest NDJSON line or server-sent event."""

    @property
    def max_body_bytes(self) -> int:
        """The largest non-streaming body."""


class StreamParser(ABC):
    """Turns one response body into text deltas and fills in the generation record.

    ``feed`` gets the body in network-sized pieces; ``close`` is called at the end of
    the body. A streaming body goes to ``_feed`` piece by piece (it appends the non-empty
    deltas a piece completes to a list, counting them in ``kept``: no generator per piece)
    and ends with ``_close``; a non-streaming one (at most ``max_body_bytes``, refused as soon as it
    grows past that) is decoded here as it arrives (:class:`~backends._json_body.JsonBodyDecoder`)
    and handed parsed to ``_close_whole``. All three raise a :class:`BackendError` where the
    stream goes wrong (the closing ones, generators of the last deltas, raise
    :class:`IncompleteStreamError` if the terminal frame never came).
    The deltas parsed before the error are still returned, and the error is kept in
    ``error`` for the caller to raise after handing them on: text that arrived is never
    lost. ``kept`` counts the deltas returned so far (what error messages report);
    ``frames`` counts protocol frames parsed (keep-alive comments excluded); the idle
    timer restarts whenever it grows.
    """

    def __init__(self, backend: ParsedServer, url: str, generation: GenerationInfo, stream: bool) -> None:
        self.backend = backend
        self.url = url
        self.generation = generation
        self.stream = stream
        self.frames = 0
        self.kept = 0
        self.done = False
        self.error: BackendError | None = None
        self.max_frame_bytes = backend.max_frame_bytes
        self.max_body_bytes = backend.max_body_bytes
        # A non-streaming body: decoded as it arrives (the decoder made by its first piece: a
        # stream never needs one), its first bytes kept to quote in errors.
        self._document: JsonBodyDecoder | None = None
        self._head = b""
        self._size = 0
        self._blank = True

    def feed(self, data: bytes) -> list[str]:
        """Parse *data*; return the non-empty deltas it completed (then check ``error``)."""
        if self.error is not None:
            return []
        if self.stream:
            out: list[str] = []
            try:
                self._feed(data, out)
            except BackendError as exc:
                self.error = exc
            return out
        self._size += len(data)
        if len(self._head) < _HEAD_BYTES:
            self._head += data[: _HEAD_BYTES - len(self._head)]
        if self._size > self.max_body_bytes:
            self.error = self.malformed(
                f"a response body larger than {self.max_body_bytes} bytes (raise max_body_bytes= "
                f"if that is expected)",
                self._head[:200],
            )
            self._document = None  # drop what was read
            return []
        self._blank = self._blank and not data.strip()
        if self._document is None:
            self._document = JsonBodyDecoder()
        try:
            self._document.feed(data)
        except ValueError:
            self.error = self.malformed("a response that is not JSON", self._head)
        return []

    def close(self) -> list[str]:
        """End of body: return any last deltas (then check ``error``)."""
        if self.error is not None:
            return []
        if self.stream:
            return self._collect(self._close())
        if self._blank:
            self.error = self.incomplete("sent an empty body")
            return []
        assert self._document is not None  # a body that is not blank came in a piece
        try:
            document = self._document.close()
        except ValueError:
            self.error = self.malformed("a response that is not JSON", self._head)
            return []
        finally:
            self._document = None
        return self._collect(self._close_whole(document))

    def _collect(self, deltas: Iterator[str]) -> list[str]:
        out: list[str] = []
        if self.error is not None:
            return out
        try:
            for delta in deltas:
                if delta:
                    out.append(delta)
                    self.kept += 1
        except BackendError as exc:
            self.error = exc
        return out

    @abstractmethod
    def _feed(self, data: bytes, out: list[str]) -> None:
        """Append to *out* the non-empty deltas *data* completes, adding one to ``kept`` for each
        (a frame's error then reports them), then raise if a frame is bad."""

    @abstractmethod
    def _close(self) -> Iterator[str]:
        """Yield the last deltas of a stream; raise if it is incomplete."""

    @abstractmethod
    def _close_whole(self, document: Any) -> Iterator[str]:
        """Yield the deltas of a whole non-streaming body, parsed (*document*); raise if it is incomplete."""

    @property
    def head(self) -> bytes:
        """The first bytes of a non-streaming body, to quote in errors."""
        return self._head

    def malformed(self, what: str, line: bytes | bytearray | str) -> MalformedStreamError:
        """A :class:`MalformedStreamError` quoting *line* (neutralised, truncated)."""
        text = line[:1000].decode("utf-8", errors="replace") if not isinstance(line, str) else line
        quoted = self.backend.shown_text(text)
        return MalformedStreamError(
            f"{self.backend.provider_name} at {self.url} sent {what}: {quoted!r}. "
            f"{self.backend.hint_wire_format()}",
            line=quoted,
            url=self.url,
            provider=self.backend.provider,
        )

    def too_large(self, what: str, limit: int, head: bytes) -> MalformedStreamError:
        """A :class:`MalformedStreamError` for a line or event over ``max_frame_bytes``."""
        return self.malformed(
            f"{what} larger than {limit} bytes (raise max_frame_bytes= if that is expected)", head
        )

    def incomplete(self, detail: str, cause: str | None = None) -> IncompleteStreamError:
        """An :class:`IncompleteStreamError` saying how much arrived before the end."""
        return incomplete(self.backend, self.url, self.kept, detail, cause)

    def stream_error(self, server_message: str) -> ServerError:
        """A :class:`ServerError` for an error frame sent inside a 200 stream."""
        text = self.backend.shown_text(server_message)
        return ServerError(
            f"{self.backend.provider_name} at {self.url} reported an error after "
            f"{self.kept} deltas: {text}. The text received so far is kept on the thunk.",
            status=200,
            server_message=text,
            url=self.url,
            provider=self.backend.provider,
        )
