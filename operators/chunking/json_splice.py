"""A retry's new JSON document, spliced after the items a run delivered.

A schema-constrained server cannot continue a JSON document: asked again, it starts a new
one. A run with JSON chunking that retries therefore asks for the items after the
delivered ones, and splices the new document's items after them, so that the run's output
stays one document and its delivered text is never taken back::

    delivered        {"products": [{"name": "p0"}, ..., {"name": "p16"}
    new document     {"products": [{"name": "q0"}, {"name": "q1"}]}
    the run's text   {"products": [{"name": "p0"}, ..., {"name": "p16"}, {"name": "q0"}, {"name": "q1"}]}

:func:`resume_point` says whether the delivered text ends where that is possible: right
after an element of an array reached from the document's root through field names only
(``$``, ``$.products``, ``$.order.lines``). :class:`JsonSplice` turns the new document's
deltas into the text that follows the delivered one: the new document up to the first
element of the same array is dropped (its own opening, and any fields before the array),
a ``,`` stands in its place, and from there on the new document passes through verbatim
(its elements, then what closes it; text after its end is dropped). The run's chunker,
which read the delivered text first (``Chunker.resume``), goes on reading that text as
the same document: the new items get the paths and chunk indices that follow the
delivered ones (``$.products[17]``).
"""

from __future__ import annotations

import re
from typing import Final

import attrs

from operators.chunking.json import JsonChunking, JsonChunkingError, JsonScanner
from operators.json_path import format_path, parse_path

__all__ = ["JsonSplice", "ResumePoint", "resume_point"]

_WHITESPACE = " \t\n\r"


@attrs.frozen
class ResumePoint:
    """Where a delivered JSON text ends, when a new document's items can follow it.

    *array* is the path of the array (in the user's type, e.g. ``"$.products"``), *kept*
    how many of its elements were delivered (the new document's first element becomes
    element *kept*), *closers* the text that closes the containers around the array in
    the delivered document (``"}"`` for ``{"products": [``).
    """

    array: str
    kept: int
    closers: str


def resume_point(strategy: JsonChunking, delivered: str) -> ResumePoint | None:
    """Where *delivered* (a run's output up to the end of its last delivered chunk, read by
    *strategy*) stands, when a new document's items can be spliced after it; else ``None``
    (it ends inside a value or after a field, or the array sits in another array)."""
    scanner = strategy.scanner()
    try:
        scanner.resume(delivered)
    except JsonChunkingError:
        return None
    place = scanner.after_element()
    if place is None:
        return None
    steps, kept, closers = place
    if not all(isinstance(step, str) for step in steps):
        return None
    return ResumePoint(format_path(steps), kept, closers)


# What the splice is doing: seeking the array, reading past its opening, passing the new
# document through, done.
_SEEK, _OPEN, _PASS, _DONE = range(4)
_OUTSIDE: Final = re.compile(r'["{}\[\]]')
_INSIDE: Final = re.compile(r'["\\]')


class JsonSplice:
    """The text that follows a run's delivered JSON text, made from a retry's new document.

    Feed it the new document's deltas in order (:meth:`feed`); each call returns the text
    it adds to the run's output (often ``""`` while the array is sought), and
    :meth:`finish` what ends it. ``text`` is all it has returned.

    The new document is read by a scanner of its own until the first element of the
    array at ``point.array`` starts (prose, a code fence and the fields before the array
    are tolerated and dropped); ``","`` then joins that element to the delivered ones, or
    an empty array's ``]`` closes the delivered ones. From there on the deltas pass
    through, followed only as far as their nesting (the run's chunker checks them), up to
    the end of the new document: text after it (a closing code fence, prose) is dropped, so
    the run's text is one JSON document. When the new document wraps the array differently
    from the delivered one (one has the ``{"result": ...}`` wrapper a server may add, the
    other is the bare list), it passes through up to the end of its array, and the
    delivered document's own *closers* end the text.

    A new document without that array raises :class:`JsonChunkingError` at :meth:`finish`;
    text that is not JSON before the array raises it at once. Their offsets count in the
    new document.
    """

    __slots__ = (
        "_array_at",
        "_depth",
        "_escaped",
        "_head",
        "_parts",
        "_point",
        "_quoted",
        "_scanner",
        "_state",
        "_stop",
        "_suffix",
    )

    def __init__(self, strategy: JsonChunking, point: ResumePoint) -> None:
        self._point = point
        self._scanner: JsonScanner = JsonChunking(point.array, wrapper=strategy.wrapper).scanner()
        self._state = _SEEK
        self._head = ""  # the new document's text while the array is sought (from its start)
        self._array_at = -1  # where the array opens in the new document
        # Past the splice: the nesting depth, where the text stops (the document's end, or
        # its array's end when it is wrapped differently) and what follows that.
        self._depth = 0
        self._stop = 0
        self._suffix = ""
        self._quoted = False  # inside a string
        self._escaped = False  # the next delta starts with an escaped character
        self._parts: list[str] = []

    @property
    def text(self) -> str:
        """Everything :meth:`feed` and :meth:`finish` have returned."""
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def feed(self, delta: str) -> str:
        """Read the new document's next *delta*; return the text it adds to the run's output."""
        state = self._state
        if state == _PASS:
            out = self._pass(delta)
        elif state == _DONE or not delta:
            return ""
        else:
            out = self._seek(delta)
        if out:
            self._parts.append(out)
        return out

    def finish(self) -> str:
        """The new document has ended: the text that ends the run's output (raises when it had
        no array at ``point.array``)."""
        if self._state in (_PASS, _DONE):
            return ""  # an unfinished document: the run's chunker, which read it, says so
        try:
            self._scanner.finish()
        except JsonChunkingError as exc:
            raise _in_new_document(exc) from None
        raise JsonChunkingError(
            self._scanner.settled,
            f"an array at {self._point.array}",
            "",
            detail=f"in the retry's new document, asked for the items after the {self._point.kept} delivered",
        )

    def _seek(self, delta: str) -> str:
        self._head += delta
        if self._state == _SEEK:
            try:
                spans = self._scanner.feed(delta)
            except JsonChunkingError as exc:
                raise _in_new_document(exc) from None
            self._array_at = spans[0][0] if spans else self._scanner.opened_at
            if self._array_at < 0:
                return ""
            head = self._head
            if head[self._array_at] != "[":
                raise JsonChunkingError(
                    self._array_at,
                    f"an array at {self._point.array}",
                    head[self._array_at : self._array_at + 20],
                    detail="in the retry's new document",
                )
            wrapped = len(parse_path(self._point.array)) + self._scanner.wrapped
            closers = self._point.closers
            self._depth = wrapped + 1  # inside the array
            if wrapped != len(closers):  # wrapped differently: stop at the array's end
                self._stop, self._suffix = wrapped, closers
            self._state = _OPEN
        # The array has opened: once its first element (or its end) shows, splice there.
        head = self._head
        i = self._array_at + 1
        while i < len(head) and head[i] in _WHITESPACE:
            i += 1
        if i >= len(head):
            return ""
        self._head = ""
        self._state = _PASS
        return ("" if head[i] == "]" else ",") + self._pass(head[i:])

    def _pass(self, delta: str) -> str:
        """*delta*, up to where the text stops (then what follows that); the nesting followed."""
        n = len(delta)
        i = 0
        if self._escaped:
            self._escaped, i = False, 1
        while i < n:
            if self._quoted:
                found = _INSIDE.search(delta, i)
                if found is None:
                    return delta
                i = found.end()
                if found.group() == '"':
                    self._quoted = False
                elif i >= n:
                    self._escaped = True
                else:
                    i += 1
                continue
            found = _OUTSIDE.search(delta, i)
            if found is None:
                return delta
            i = found.end()
            c = found.group()
            if c == '"':
                self._quoted = True
            elif c in "{[":
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == self._stop:
                    self._state = _DONE
                    return delta[:i] + self._suffix
        return delta


def _in_new_document(exc: JsonChunkingError) -> JsonChunkingError:
    return JsonChunkingError(exc.offset, exc.expected, exc.found, detail="in the retry's new document")
