"""``ChunkingStrategy``: where a stream of text is cut into units for validation.

A strategy is stateless (Mellea's interface): ``split(text)`` returns the complete
chunks of *text* and withholds the trailing fragment; ``flush(text)`` releases that
fragment at the natural end of the stream.

Strategies are driven incrementally by :class:`~operators.chunking.Chunker`, which
hands ``split`` only the text after the last chunk it released. A strategy therefore
has to be *restartable at chunk ends*: for the chunks ``c1..ck`` of ``split(t)`` with
``ck`` ending at offset ``e``, ``split(t + x) == [c1..ck] + split(t[e:] + x)``. The
built-in strategies are; ``operators.testing.check_chunking_strategy`` checks yours.

A strategy whose cuts depend on what came before the last chunk (JSON chunking: where a
value ends depends on how deeply it is nested) is a :class:`ScanningStrategy` instead: the
``Chunker`` keeps one :class:`Scanner` per stream, which carries that state across chunk
ends and reads each character once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Protocol

__all__ = ["ChunkingStrategy", "Scanner", "ScanningStrategy", "Span"]

Span = tuple[int, int, str | None, Any]
"""A chunk a :class:`Scanner` found: ``(start, end, path, value)``, offsets in the stream."""


class ChunkingStrategy(ABC):
    """Cuts text into chunks. Stateless: the same text always gives the same chunks.

    To name a strategy by an alias (``chunking="mine"``, the command line's
    ``--chunking mine``), decorate its class with
    :func:`~operators.chunking.register_chunking`.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A split_extended is written for one split: a subclass that overrides split alone
        # (a variant of a built-in) gets the default, which calls the new split.
        if "split" in cls.__dict__ and "split_extended" not in cls.__dict__:
            cls.split_extended = ChunkingStrategy.split_extended  # type: ignore[method-assign]

    separator: ClassVar[str] = " "
    """What stands between two of its chunks when they are shown joined and the text
    between them is not known (the command line's view of a run)."""

    @abstractmethod
    def split(self, accumulated_text: str) -> list[str]:
        """The complete chunks of *accumulated_text*, in order, without the trailing fragment.

        Every chunk must be a non-empty, verbatim substring of the text, and the
        chunks must appear in the text in the order returned.
        """

    def flush(self, accumulated_text: str) -> list[str]:
        """The fragment ``split`` withheld, released at the natural end of the stream.

        The default discards it (returns ``[]``).
        """
        return []

    def split_extended(self, accumulated_text: str, known: int) -> list[str]:
        """``split(accumulated_text)``, where ``accumulated_text[:known]`` completes no chunk.

        The :class:`~operators.chunking.Chunker` calls this on every delta, with *known* the
        length of the text it held before the delta. The default calls ``split``, which reads
        the whole text again: a chunk that grows over many deltas then costs time quadratic
        in its length. A strategy whose chunk ends can be seen in a few characters overrides
        it to look only at the text from just before *known* (the built-ins do), so a stream
        costs time linear in its length whatever the length of its chunks.
        ``operators.testing.check_chunking_strategy`` checks that both agree.
        """
        return self.split(accumulated_text)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Scanner(Protocol):
    """One stream's incremental scan: state carried from delta to delta."""

    def feed(self, delta: str) -> list[Span]:
        """Read *delta*; return the chunks it completed, in order."""
        ...

    def finish(self) -> list[Span]:
        """The stream has ended: the chunks still withheld, in order."""
        ...

    def resume(self, text: str) -> list[Span]:
        """Read *text*, the stream's beginning delivered before (a retry continues after it),
        which ends where a chunk ends: return the chunks it completes, that one included."""
        ...

    @property
    def settled(self) -> int:
        """The offset before which no chunk not yet released can start (text before it that
        is in no chunk has been read and is in none)."""
        ...


class ScanningStrategy(ChunkingStrategy):
    """A strategy that carries scanner state across chunk ends (it is not restartable there).

    The :class:`~operators.chunking.Chunker` asks it for a :class:`Scanner` per stream
    and feeds that the deltas: each character is read once, whatever the slicing.
    ``split`` and ``flush`` (the stateless interface, for code written for Mellea's
    chunkers) scan the text they are given from its beginning with a new scanner.
    """

    @abstractmethod
    def scanner(self, start_offset: int = 0) -> Scanner:
        """A new scanner for one stream whose first character is at *start_offset*."""

    def split(self, accumulated_text: str) -> list[str]:
        """The chunks a new scanner finds in *accumulated_text*, read as a stream's beginning."""
        return [accumulated_text[a:b] for a, b, _, _ in self.scanner().feed(accumulated_text)]

    def flush(self, accumulated_text: str) -> list[str]:
        """The chunks ending the stream *accumulated_text* releases beyond :meth:`split`'s."""
        scanner = self.scanner()
        scanner.feed(accumulated_text)
        return [accumulated_text[a:b] for a, b, _, _ in scanner.finish()]
