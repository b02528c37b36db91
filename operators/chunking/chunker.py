"""``Chunker``: drives a :class:`ChunkingStrategy` over a stream of deltas in linear time.

It keeps only the pending fragment (the text after the last chunk it released) and
hands the strategy that, never the accumulated text, so the work per delta depends
on the length of the current chunk, not of the whole output.
"""

from __future__ import annotations

import reprlib
from typing import Any

from attrs.exceptions import FrozenInstanceError

from operators.chunking.strategy import ChunkingStrategy, Scanner, ScanningStrategy, Span

__all__ = ["Chunk", "Chunker"]


class Chunk(str):
    """One chunk of the output: a ``str`` (its text) that also knows its place in the stream.

    It compares, hashes and prints as its text, so code written for Mellea's ``Chunker``
    (whose ``feed()`` and ``flush()`` return lists of ``str``) works unchanged:
    ``Chunker(SentenceChunking()).feed("Hi. ") == ["Hi."]``. It is also what a
    requirement's ``stream_validate`` receives as its chunk. Beyond the text it carries:

    * ``chunk_index``: its number in the stream (the first chunk is 0), as in
      ``ChunkEvent.chunk_index``;
    * ``start`` and ``end``: offsets into the accumulated output, so
      ``output[start:end] == chunk``;
    * ``gap``: the text between the previous chunk's end and ``start`` (separators the
      strategy left out), so chunks with their gaps re-assemble the output: what a
      requirement with its own chunking is fed;
    * ``path`` and ``value``: for a chunk of JSON chunking, the place of the JSON value
      it is (``"$.products[3]"``) and that value parsed (JSON ``null`` is ``None`` with a
      path); ``None`` and ``None`` for text chunking. Checks need no second parse.

    No field shadows a ``str`` method (``chunk.index("x")`` is ``str.index``). Two chunks
    with the same text are equal wherever they stand; compare
    ``(chunk, chunk.chunk_index, chunk.start, chunk.end)`` to tell them apart. ``str``
    methods return a plain ``str`` (``chunk.upper()`` has no place). Immutable.
    """

    # A str subclass cannot have non-empty __slots__ (str is variable-sized), so the place
    # lives in the instance dict, written directly: cheaper than four attribute assignments.
    chunk_index: int
    start: int
    end: int
    gap: str
    # Class-level defaults: text chunks never write them, so a text chunk costs what it
    # did before they existed (:meth:`structured` writes them for a JSON value).
    path: str | None = None
    value: Any = None

    def __new__(cls, text: str, chunk_index: int, start: int, end: int, gap: str = "") -> Chunk:
        self = str.__new__(cls, text)
        fields = self.__dict__
        fields["chunk_index"] = chunk_index
        fields["start"] = start
        fields["end"] = end
        fields["gap"] = gap
        return self

    @classmethod
    def structured(
        cls, text: str, chunk_index: int, start: int, end: int, gap: str, path: str, value: Any
    ) -> Chunk:
        """A chunk that is a JSON value: *path* is its place, *value* the value parsed."""
        self = cls(text, chunk_index, start, end, gap)
        fields = self.__dict__
        fields["path"] = path
        fields["value"] = value
        return self

    @property
    def text(self) -> str:
        """The chunk itself (a ``Chunk`` is its text), for code that reads ``chunk.text``."""
        return self

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError()

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError()

    def __reduce__(self) -> tuple[type[Chunk], tuple[str, int, int, int, str], dict[str, Any]]:
        # str's own reduction would call Chunk(text) without its place. The state (path and
        # value, when set) is written into __dict__ by pickle and copy, not by __setattr__.
        meaning: dict[str, Any] = {
            name: self.__dict__[name] for name in ("path", "value") if name in self.__dict__
        }
        return type(self), (str(self), self.chunk_index, self.start, self.end, self.gap), meaning


class Chunker:
    """Incremental chunking: ``feed`` deltas, then ``flush`` once at the natural end.

    Feeding any slicing of a text yields the same chunks as feeding it whole (the
    delta-invariance law), provided the strategy is restartable at chunk ends (see
    :mod:`operators.chunking`). A strategy that returns an empty chunk, or text that
    is not a verbatim substring of what it was given, is rejected with a
    ``ValueError`` naming it.

    *start_index* and *start_offset* number the chunks and place their spans when this
    stream continues an earlier one (a retry continues the delivered text): the first
    chunk gets index *start_index*, and offsets count from *start_offset*.
    """

    __slots__ = ("_count", "_flushed", "_offset", "_pending", "_scanner", "strategy")

    def __init__(self, strategy: ChunkingStrategy, *, start_index: int = 0, start_offset: int = 0) -> None:
        self.strategy = strategy
        self._pending = ""
        self._offset = start_offset  # offset of _pending in the accumulated output
        self._count = start_index  # the index of the next chunk
        self._flushed = False
        # A scanning strategy's state lives in its scanner, one per stream.
        self._scanner: Scanner | None = (
            strategy.scanner(start_offset) if isinstance(strategy, ScanningStrategy) else None
        )

    @property
    def pending(self) -> str:
        """The text received after the last released chunk (withheld so far)."""
        return self._pending

    @property
    def settled(self) -> int:
        """The offset before which no chunk not yet released can start: the start of the
        withheld text, or for a scanning strategy what its scanner has read past."""
        scanner = self._scanner
        return self._offset if scanner is None else scanner.settled

    @property
    def chunks_released(self) -> int:
        """The index of the next chunk: how many have been released, counting from ``start_index``."""
        return self._count

    def feed(self, delta: str) -> list[Chunk]:
        """Add *delta*; return the chunks it completed (often none)."""
        if self._flushed:
            raise RuntimeError("Chunker.feed() after flush(): create a new Chunker for a new stream")
        if not delta:
            return []
        pending = self._pending
        known = len(pending)
        # The local is then the string's only reference, so += extends it in place: through
        # the attribute it would copy the whole pending text on every delta (quadratic in
        # the length of a chunk).
        self._pending = ""
        pending += delta
        self._pending = pending
        if self._scanner is not None:
            return self._place(self._scanner.feed(delta))
        returned = self.strategy.split_extended(pending, known)
        # Most deltas complete no chunk: an empty list needs no checking, nor a call to say so.
        if type(returned) is list and not returned:
            return []
        return self._release(returned, "split")

    def resume(self, text: str) -> None:
        """Read *text* as the stream's beginning, delivered before (a retry continues after it):
        its chunks are not released again, nor counted. A scanning strategy's scanner rebuilds
        its state from it (the nesting of a JSON document); a restartable strategy keeps the
        fragment after its last chunk, as if fed it."""
        if self._flushed:
            raise RuntimeError("Chunker.resume() after flush(): create a new Chunker for a new stream")
        if not text:
            return
        self._pending += text
        if self._scanner is not None:
            released = self._place(self._scanner.resume(text))
        else:
            released = self._release(self.strategy.split(self._pending), "split")
        self._count -= len(released)

    def flush(self) -> list[Chunk]:
        """End of stream: release the withheld fragment, as the strategy's ``flush`` decides."""
        if self._flushed:
            return []
        self._flushed = True
        if self._scanner is not None:
            return self._place(self._scanner.finish())
        return self._release(self.strategy.flush(self._pending), "flush")

    def _place(self, spans: list[Span]) -> list[Chunk]:
        """Chunks from a scanner's spans (stream offsets inside the pending text)."""
        if not spans:
            return []
        pending, offset = self._pending, self._offset
        chunks: list[Chunk] = []
        pos = 0
        for start, end, path, value in spans:
            a, b = start - offset, end - offset
            if path is None:
                chunks.append(Chunk(pending[a:b], self._count, start, end, pending[pos:a]))
            else:
                chunks.append(
                    Chunk.structured(pending[a:b], self._count, start, end, pending[pos:a], path, value)
                )
            self._count += 1
            pos = b
        self._pending = pending[pos:]
        self._offset += pos
        return chunks

    def _release(self, returned: object, method: str) -> list[Chunk]:
        # Most deltas complete no chunk: an empty list needs no checking (two calls a delta).
        if type(returned) is list and not returned:
            return []
        texts = _check_texts(self.strategy, method, returned)
        if not texts:
            return []
        pending = self._pending
        chunks: list[Chunk] = []
        pos = 0
        for text in texts:
            start = pending.find(text, pos) if text else -1
            if start < 0:
                problem = (
                    "an empty chunk" if not text else f"{_preview(text)}, which is not a verbatim substring"
                )
                raise ValueError(
                    f"{self.strategy!r}.{method}() returned {problem} of the text it was given "
                    f"({_preview(pending)}) after the chunks before it. Chunks must be non-empty, "
                    "verbatim and in order; fix the strategy's split()/flush()."
                )
            gap = pending[pos:start]
            pos = start + len(text)
            chunks.append(Chunk(text, self._count, self._offset + start, self._offset + pos, gap))
            self._count += 1
        self._pending = pending[pos:]
        self._offset += pos
        return chunks


def _check_texts(strategy: ChunkingStrategy, method: str, returned: object) -> list[str]:
    """*returned* if it is a list (or tuple) of str; else a ``TypeError`` naming the strategy."""
    if isinstance(returned, (list, tuple)):
        wrong = [text for text in returned if not isinstance(text, str)]
        if not wrong:
            return list(returned)
        got, where = wrong[0], " inside the list"
    else:
        got, where = returned, ""
    raise TypeError(
        f"{strategy!r}.{method}() returned {reprlib.repr(got)} ({type(got).__name__}{where}); it must "
        f"return a list of str, the chunks it completed ([] for none). Fix the strategy's split()/flush()."
    )


def _preview(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
