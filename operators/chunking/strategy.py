"""``ChunkingStrategy``: where a stream of text is cut into units for validation.

A strategy is stateless (Mellea's interface): ``split(text)`` returns the complete
chunks of *text* and withholds the trailing fragment; ``flush(text)`` releases that
fragment at the natural end of the stream.

Strategies are driven incrementally by :class:`~operators.chunking.Chunker`, which
hands ``split`` only the text after the last chunk it released. A strategy therefore
has to be *restartable at chunk ends*: for the chunks ``c1..ck`` of ``split(t)`` with
``ck`` ending at offset ``e``, ``split(t + x) == [c1..ck] + split(t[e:] + x)``. The
built-in strategies are; ``operators.testing.check_chunking_strategy`` checks yours.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

__all__ = ["ChunkingStrategy"]


class ChunkingStrategy(ABC):
    """Cuts text into chunks. Stateless: the same text always gives the same chunks.

    To name a strategy by an alias (``chunking="mine"``, the command line's
    ``--chunking mine``), decorate its class with
    :func:`~operators.chunking.register_chunking`.
    """

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

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
