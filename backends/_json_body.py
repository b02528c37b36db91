"""A whole JSON body decoded as it arrives, in about the memory of what it holds.

``json.loads`` needs the whole text at once: the body's bytes, their decoded text and the
parsed strings all exist together (a 40 MiB chat answer peaked at 3.1 times its size).
:class:`JsonBodyDecoder` takes the body in network-sized pieces instead. The document's
structure and its short strings are kept as text (the *skeleton*) and parsed with
``json.loads`` at the end; a string longer than :data:`LONG_STRING` (a chat answer's
``content``) is decoded piece by piece as it arrives, into one ``str`` that grows in place,
and its raw text is dropped as soon as it is decoded. The skeleton holds a placeholder
where that string stood, replaced after parsing. The peak is then the parsed strings plus
one network read: a body of B bytes whose bulk is one long string peaks at about B.

The result equals ``json.loads`` of the whole body (strict: raw control characters in
strings and invalid escapes are errors, a UTF-8 byte-order mark is skipped); errors are
``ValueError``.
"""

from __future__ import annotations

import codecs
import json
import re
import secrets
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any

__all__ = ["LONG_STRING", "JsonBodyDecoder"]

LONG_STRING = 64 * 1024
"""Characters of a string literal kept in the skeleton; a longer one is decoded as it arrives."""

_UNITS = re.compile(r'(?:[^"\\]++|\\[^u]|\\u[0-9a-fA-F]{4})*+')
"""The complete pieces of a string's content: plain characters, escapes (an incomplete
escape at the end of the text read so far, or the closing quote, stops the match)."""

_LONGEST_ESCAPE = 6  # \uXXXX


def _high(ch: str) -> bool:
    return "\ud800" <= ch <= "\udbff"


def _low(ch: str) -> bool:
    return "\udc00" <= ch <= "\udfff"


class JsonBodyDecoder:
    """Decodes one UTF-8 JSON document fed in pieces (see the module docstring)."""

    def __init__(self, long_string: int = LONG_STRING) -> None:
        self._long_string = long_string
        self._utf8 = codecs.getincrementaldecoder("utf-8-sig")()
        self._skeleton: list[str] = []
        self._pending = ""
        """Text not consumed yet: a short string so far (from its quote), or a long one's last,
        incomplete escape."""
        self._checked = 0
        """How much of a pending short string is complete pieces (not matched again)."""
        self._in_string = False
        self._long: str | None = None
        """The decoded text of the long string being read."""
        self._held = ""
        """A high surrogate at the end of the last decoded piece, waiting for its low half."""
        self._strings: list[str] = []
        self._mark = f"\x00rxllm:{secrets.token_hex(8)}:"

    def feed(self, data: bytes) -> None:
        """Take the next piece of the body."""
        self._consume(self._utf8.decode(data))

    def close(self) -> Any:
        """The parsed document (``ValueError`` if it is not valid JSON)."""
        self._consume(self._utf8.decode(b"", final=True))
        if self._in_string:
            raise ValueError("the body ends inside a string")
        document = json.loads("".join(self._skeleton))
        return self._restore(document) if self._strings else document

    def _consume(self, new: str) -> None:
        text = self._pending + new if self._pending else new
        self._pending = ""
        size = len(text)
        pos = 0
        start = 0  # where the current string literal starts in text (its quote), while it is short
        if self._in_string and self._long is None:
            pos = self._checked
        while True:
            if not self._in_string:
                quote = text.find('"', pos)
                if quote < 0:
                    if pos < size:
                        self._skeleton.append(text[pos:])
                    return
                if quote > pos:
                    self._skeleton.append(text[pos:quote])
                self._in_string, start, pos = True, quote, quote + 1
            match = _UNITS.match(text, pos)
            assert match is not None  # the pattern matches the empty string
            end = match.end()
            if end < size and text[end] == '"':  # the string ends here
                if self._long is None and end - start <= self._long_string:
                    self._skeleton.append(text[start : end + 1])
                else:
                    self._extend(text[start + 1 if self._long is None else pos : end])
                    self._end_long()
                self._in_string, pos = False, end + 1
                continue
            if size - end >= _LONGEST_ESCAPE:
                # Only an escape that is not one stops the match this far from the end.
                scanstring(text[end : end + _LONGEST_ESCAPE] + '"', 0)
                raise ValueError(f"invalid escape {text[end : end + _LONGEST_ESCAPE]!r}")
            if self._long is None and end - start > self._long_string:
                self._long = ""
                self._extend(text[start + 1 : end])
            elif self._long is not None:
                self._extend(text[pos:end])
            if self._long is None:
                self._pending, self._checked = text[start:], end - start
            else:
                self._pending = text[end:]
            return

    def _extend(self, raw: str) -> None:
        """Decode *raw* (complete pieces of a string's content) onto the long string."""
        piece = scanstring(raw + '"', 0)[0]
        if self._held:
            if piece and _low(piece[0]):
                high, low = ord(self._held), ord(piece[0])
                piece = chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)) + piece[1:]
            else:
                piece = self._held + piece
            self._held = ""
        if piece and _high(piece[-1]):
            piece, self._held = piece[:-1], piece[-1]
        text = self._long or ""
        self._long = None
        # Held by this one name only, CPython grows the str in place: no copy of what came before.
        text += piece
        self._long = text

    def _end_long(self) -> None:
        text = (self._long or "") + self._held if self._held else self._long or ""
        self._long, self._held = None, ""
        self._skeleton.append(json.dumps(f"{self._mark}{len(self._strings)}"))
        self._strings.append(text)

    def _restore(self, value: Any) -> Any:
        """*value* with each placeholder replaced by its long string."""
        if isinstance(value, str):
            return self._strings[int(value[len(self._mark) :])] if value.startswith(self._mark) else value
        if isinstance(value, list):
            return [self._restore(item) for item in value]
        if isinstance(value, dict):
            return {self._restore(key): self._restore(item) for key, item in value.items()}
        return value
