"""``JsonChunking`` (alias ``"json"``): one chunk per JSON value completed at the delivery path.

The scanner reads each character once (linear in the output, whatever the slicing into
deltas) and keeps only the text of the value it is inside. A chunk is the raw text of
one value; it carries ``path`` (its concrete place, ``"$.products[3]"``) and ``value``
(that text parsed). The structure around the values (``{"products": [``, the commas,
``]}``) is the chunks' ``gap``, scanned and checked, never delivered.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar, Final

from operators.chunking.registry import register_chunking
from operators.chunking.strategy import ScanningStrategy, Span
from operators.json_path import Step, format_path, matches, parse_path

__all__ = ["JsonChunking", "JsonChunkingError"]


class JsonChunkingError(ValueError):
    """The output is not JSON where JSON was expected (or it ended inside the document).

    ``offset`` is the position in the output where it stopped being JSON, ``expected``
    what the scanner was waiting for, ``found`` the text it met there (``""``: the end).
    """

    def __init__(self, offset: int, expected: str, found: str, *, detail: str = "") -> None:
        self.offset = offset
        self.expected = expected
        self.found = found
        what = f"found {found!r}" if found else "the output ended"
        super().__init__(
            f"the output is not JSON at offset {offset}: expected {expected}, {what}"
            + (f" ({detail})" if detail else "")
        )


_STRING_RUN: Final = re.compile(r'[^"\\]*')
_SCALAR_RUN: Final = re.compile(r"[A-Za-z0-9.+\-]*")
_SCALAR: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null")
_PROSE: Final = re.compile(r"[^{\[]*")
_WHITESPACE: Final = frozenset(" \t\n\r")
_SCALAR_START: Final = frozenset("-0123456789tfn")

# What the scanner expects next inside the document.
_VALUE, _FIRST_VALUE, _KEY, _FIRST_KEY, _COLON, _NEXT = range(6)
_EXPECTED: Final = {
    _VALUE: "a JSON value",
    _FIRST_VALUE: "a JSON value or ']'",
    _KEY: "a field name in double quotes",
    _FIRST_KEY: "a field name in double quotes or '}'",
    _COLON: "':' after the field name",
}
# Where the scanner is: before the document (prose, a code fence), in it, after it.
_BEFORE, _IN, _AFTER = range(3)
# The token being read.
_NO_TOKEN, _STRING, _KEY_STRING, _SCALAR_TOKEN = range(4)


@register_chunking("json")
class JsonChunking(ScanningStrategy):
    """One chunk per JSON value completed at the delivery path *path*.

    *path* (see :mod:`operators.json_path`: ``$``, ``.name``, ``["key"]``, ``[n]``,
    ``[*]``, ``.*``) names the values to deliver, e.g. ``"$.products[*]"``. By default
    (``None``) the records of the document: the elements of a top-level array; in a
    top-level object, the elements of its first array-valued field, and every other field
    as a whole (each top-level field, when there is no array).

    *wrapper* names the field a server-bound schema wrapped the user's value in (a list
    type is sent as ``{"result": [...]}``, since servers want an object at the root):
    when the document is an object, paths address the value of that field (``$[*]`` is
    an element of the list, and chunks carry ``$[3]``); a bare document is read as it is.

    What real models emit around JSON is tolerated: text before the document (prose, the
    opening of a Markdown code fence) is skipped up to the first ``{`` or ``[``, and text
    after the document is ignored. Text that is not JSON where JSON is expected raises
    :class:`JsonChunkingError` naming the offset, as soon as it is read; a stream that
    ends before the document is complete (or holds none) raises it at the end.

    The chunking laws (``operators.testing.check_laws``) hold as stated, coverage
    excepted (the structure between values is the chunks' gap, not a chunk). What is
    given up is restartability at chunk ends: the text after an element of
    ``"$.items[*]"`` (``, {...}]}``) is not a document of its own, so ``split`` of that
    fragment alone cannot find the next element. The ``Chunker`` therefore never re-splits
    the fragment: it keeps one scanner per stream (its state is the nesting path, what is
    expected next and the text of the value it is inside), and the one-pass law
    (``Chunker`` fed the whole text releases ``split(text) + flush(text)``) still holds,
    with ``split``/``flush`` scanning the text from its beginning.
    """

    separator: ClassVar[str] = "\n"
    """Records shown joined stand one a line."""

    def __init__(self, path: str | None = None, *, wrapper: str | None = None) -> None:
        if wrapper is not None and not isinstance(wrapper, str):
            raise TypeError(f"JsonChunking(wrapper=...) takes a field name (str) or None, got {wrapper!r}")
        self.path = path
        self.wrapper = wrapper
        self._pattern: tuple[Step, ...] | None = None if path is None else parse_path(path)

    def scanner(self, start_offset: int = 0) -> JsonScanner:
        """A new scanner for one stream whose first character is at *start_offset*."""
        return JsonScanner(self._pattern, start_offset, wrapper=self.wrapper)

    def __repr__(self) -> str:
        args = [] if self.path is None else [f"path={self.path!r}"]
        if self.wrapper is not None:
            args.append(f"wrapper={self.wrapper!r}")
        return f"JsonChunking({', '.join(args)})"


class JsonScanner:
    """The incremental scan of one stream for :class:`JsonChunking` (see there)."""

    __slots__ = (
        "_base",
        "_carrier",
        "_carrier_taken",
        "_expect",
        "_i",
        "_kinds",
        "_open_at",
        "_open_depth",
        "_open_path",
        "_pattern",
        "_root",
        "_spans",
        "_steps",
        "_text",
        "_token",
        "_token_at",
        "_where",
        "_wrapper",
    )

    def __init__(
        self, pattern: tuple[Step, ...] | None, start_offset: int = 0, *, wrapper: str | None = None
    ) -> None:
        self._pattern = pattern
        self._wrapper = wrapper
        self._root = 0  # 1 when the document is the wrapper object: paths start inside it
        self._text = ""  # the text from stream offset _base on that may still be needed
        self._base = start_offset
        self._i = 0  # the scan position in _text
        self._where = _BEFORE
        self._expect = _VALUE
        self._kinds: list[bool] = []  # the open containers, outermost first: True for an object
        self._steps: list[Step] = []  # the place in each: the current field name or element index
        self._token = _NO_TOKEN
        self._token_at = 0  # stream offset where the token began
        self._open_at = -1  # stream offset where the value being delivered began (-1: none)
        self._open_depth = 0
        self._open_path = ""
        self._carrier = False  # default path: inside the array whose elements are the records
        self._carrier_taken = False
        self._spans: list[Span] = []

    def feed(self, delta: str) -> list[Span]:
        """Read *delta*; return the values it completed at the delivery path."""
        if self._where == _AFTER or not delta:
            return []
        text = self._text
        self._text = ""  # the local alone holds it: += extends it in place instead of copying
        text += delta
        self._text = text
        self._scan()
        spans, self._spans = self._spans, []
        # Keep only what may still be needed: the value being delivered, or the token being read.
        if self._open_at >= 0:
            keep = self._open_at
        else:
            keep = self._token_at if self._token else self._base + self._i
        cut = keep - self._base
        if cut > 0:
            self._text = self._text[cut:]
            self._base = keep
            self._i -= cut
        return spans

    def resume(self, text: str) -> list[Span]:
        """Read *text*, a stream's beginning whose values were released before (what a retry
        delivered), and return the values it completes. A number or literal at its very end
        is taken as complete: the delivered text ends where a delivered value ends, so the
        next character (a retry's ``,``) must not release that value a second time."""
        spans = self.feed(text)
        if self._token == _SCALAR_TOKEN and self._where == _IN:
            end = len(self._text)
            start = self._token_at - self._base
            if _SCALAR.fullmatch(self._text, start, end) is None:
                raise self._fail(start, "a JSON value")
            self._token = _NO_TOKEN
            self._value_end(end)
            spans += self._spans
            self._spans = []
        return spans

    def after_element(self) -> tuple[tuple[Step, ...], int, str] | None:
        """Where the scan stands, when it stands right after an element of an array inside the
        user's value: that array's path (user-relative steps), how many elements it has had,
        and the text that closes the containers around it (``"}"`` for ``{"products": [``).
        ``None`` anywhere else (inside a value, after a field, before or after the document)."""
        kinds, steps, root = self._kinds, self._steps, self._root
        if self._where != _IN or self._token or self._expect != _NEXT or not kinds or kinds[-1]:
            return None
        if root and (len(steps) <= root or steps[0] != self._wrapper):
            return None
        count = steps[-1]
        assert isinstance(count, int)
        closers = "".join("}" if kind else "]" for kind in reversed(kinds[:-1]))
        return tuple(steps[root:-1]), count + 1, closers

    @property
    def opened_at(self) -> int:
        """The offset where the value being delivered began (-1: none is open)."""
        return self._open_at

    @property
    def wrapped(self) -> bool:
        """Whether the document is the wrapper object (the user's value is its field)."""
        return self._root == 1

    @property
    def settled(self) -> int:
        """The offset before which no chunk not yet released can start: the start of the value
        being delivered, else the end of the text read (what lies before it is structure)."""
        return self._open_at if self._open_at >= 0 else self._base + len(self._text)

    def finish(self) -> list[Span]:
        """The stream has ended: nothing is withheld in a complete document; raise otherwise."""
        if self._where == _BEFORE:
            raise JsonChunkingError(self._base + len(self._text), "a JSON object or array", "")
        if self._where == _IN:
            expected = "the end of the JSON value" if self._token else self._expected()
            raise JsonChunkingError(
                self._base + len(self._text),
                expected,
                "",
                detail=f"inside {format_path(self._steps)}: the document is not complete",
            )
        return []

    # -- the scan ---------------------------------------------------------------

    def _expected(self) -> str:
        if self._expect == _NEXT:
            return "',' or '}'" if self._kinds[-1] else "',' or ']'"
        return _EXPECTED[self._expect]

    def _fail(self, i: int, expected: str | None = None) -> JsonChunkingError:
        return JsonChunkingError(self._base + i, expected or self._expected(), self._text[i : i + 20])

    def _scan(self) -> None:
        text = self._text
        n = len(text)
        i = self._i
        kinds = self._kinds
        while i < n:
            token = self._token
            if token:
                if token == _SCALAR_TOKEN:
                    i = _SCALAR_RUN.match(text, i).end()  # type: ignore[union-attr]
                    if i >= n:
                        break  # the number or literal may go on in the next delta
                    start = self._token_at - self._base
                    if _SCALAR.fullmatch(text, start, i) is None:
                        raise self._fail(start, "a JSON value")
                    self._token = _NO_TOKEN
                    self._value_end(i)
                    continue
                i = _STRING_RUN.match(text, i).end()  # type: ignore[union-attr]
                if i >= n:
                    break
                if text[i] == "\\":
                    if i + 1 >= n:
                        break  # resume at the backslash once the escaped character arrives
                    i += 2
                    continue
                i += 1  # the closing quote
                self._token = _NO_TOKEN
                if token == _KEY_STRING:
                    start = self._token_at - self._base
                    try:
                        self._steps[-1] = json.loads(text[start:i])
                    except ValueError as exc:
                        raise self._fail(start, "a field name in double quotes") from exc
                    self._expect = _COLON
                else:
                    self._value_end(i)
                continue
            where = self._where
            if where != _IN:
                if where == _AFTER:
                    i = n
                    break
                i = _PROSE.match(text, i).end()  # type: ignore[union-attr]
                if i >= n:
                    break
                self._where = _IN
            c = text[i]
            if c in _WHITESPACE:
                i += 1
                continue
            expect = self._expect
            if expect == _NEXT:
                if c == ",":
                    self._expect = _KEY if kinds[-1] else _VALUE
                    i += 1
                elif c == ("}" if kinds[-1] else "]"):
                    i += 1
                    self._close(i)
                else:
                    raise self._fail(i)
            elif expect <= _FIRST_VALUE:  # a value
                if c == "]" and expect == _FIRST_VALUE:
                    i += 1
                    self._close(i)
                    continue
                if c == "{" or c == "[":
                    self._value_start(i, c)
                    kinds.append(c == "{")
                    self._steps.append("" if c == "{" else -1)
                    self._expect = _FIRST_KEY if c == "{" else _FIRST_VALUE
                elif c == '"':
                    self._value_start(i, c)
                    self._token = _STRING
                    self._token_at = self._base + i
                elif c in _SCALAR_START:
                    self._value_start(i, c)
                    self._token = _SCALAR_TOKEN
                    self._token_at = self._base + i
                else:
                    raise self._fail(i)
                i += 1
            elif expect == _COLON:
                if c != ":":
                    raise self._fail(i)
                self._expect = _VALUE
                i += 1
            else:  # a field name
                if c == '"':
                    self._token = _KEY_STRING
                    self._token_at = self._base + i
                    i += 1
                elif c == "}" and expect == _FIRST_KEY:
                    i += 1
                    self._close(i)
                else:
                    raise self._fail(i)
        self._i = i

    def _value_start(self, i: int, c: str) -> None:
        steps = self._steps
        if steps and not self._kinds[-1]:
            steps[-1] += 1  # type: ignore[operator]  # the next element of an array
        if self._open_at >= 0 or not self._delivers(c):
            return
        self._open_at = self._base + i
        self._open_depth = len(steps)
        self._open_path = format_path(steps[self._root :])

    def _delivers(self, c: str) -> bool:
        """Whether the value starting here (with *c*) is delivered as a chunk."""
        steps = self._steps
        root = self._root
        if not steps and self._wrapper is not None and c == "{":
            self._root = 1  # the wrapper object: the user's value is its field
            return False
        if root and steps[0] != self._wrapper:
            return False  # outside the user's value
        relative = steps[root:] if root else steps
        pattern = self._pattern
        if pattern is not None:
            return matches(pattern, relative)
        depth = len(relative)
        if depth == 1:
            if not self._kinds[root]:
                return True  # an element of a top-level array
            if c == "[" and not self._carrier_taken:
                self._carrier = self._carrier_taken = True  # the first array-valued field
                return False
            return True  # any other top-level field
        return depth == 2 and self._carrier

    def _close(self, end: int) -> None:
        """The innermost container closed; the value ended at *end* (in _text)."""
        self._kinds.pop()
        self._steps.pop()
        if len(self._kinds) == 1 + self._root and self._carrier:
            self._carrier = False
        self._value_end(end)

    def _value_end(self, end: int) -> None:
        if self._open_at >= 0 and len(self._steps) == self._open_depth:
            start = self._open_at - self._base
            raw = self._text[start:end]
            try:
                value: Any = json.loads(raw)
            except ValueError as exc:
                pos = getattr(exc, "pos", 0)
                detail = getattr(exc, "msg", str(exc))  # json's own offsets count in the value
                offset = self._open_at + pos
                raise JsonChunkingError(offset, "a JSON value", raw[pos : pos + 20], detail=detail) from exc
            self._spans.append((self._open_at, self._base + end, self._open_path, value))
            self._open_at = -1
        if self._kinds:
            self._expect = _NEXT
        else:
            self._where = _AFTER
