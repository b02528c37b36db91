"""The deltas of one generation, kept as text and boundaries rather than one ``str`` object each.

A generation keeps every delta it received (late subscribers replay them, ``astream``
hands them out, the final text is their concatenation). As ``str`` objects in a list
a 4-character delta costs about 60 bytes (a 53-byte object and its pointer), so a
1,000-delta answer held 60 KiB per stream. :class:`DeltaStore` joins every
:data:`BLOCK` deltas into one string and records where each ended: about one byte per
character plus 8 per delta. Blocks are merged like a binary counter (two neighbours of
similar size become one), so joining costs O(n log n) character copies over the whole
generation and reading the text needs few pieces.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from itertools import accumulate
from typing import Final

__all__ = ["BLOCK", "DeltaStore"]

BLOCK: Final = 64
"""Deltas kept as separate objects before they are joined into a block."""

_WIDE_FROM: Final = 2**32 - 1  # the largest offset an array("I") holds (on every platform Python runs on)


class DeltaStore:
    """An append-only sequence of strings (``append``, ``len``, ``store[i]``), stored compactly.

    ``text()`` is the concatenation of every item, ``text_from(i)`` that of the items
    from index *i* on. Items are returned exactly as appended (equal strings; not the
    same objects once joined).
    """

    __slots__ = ("_blocks", "_ends", "_starts", "_tail")

    def __init__(self) -> None:
        self._blocks: list[str] = []  # joined deltas, oldest first, sizes non-increasing
        self._starts: list[int] = []  # where each block starts in the text
        # Where each joined delta ends in the text: 4 bytes a delta while the text is under
        # 4 GiB (a stream keeps one per delta for its life), 8 beyond.
        self._ends = array("I")
        self._tail: list[str] = []  # the newest deltas, not joined yet

    def append(self, delta: str) -> None:
        """Add *delta* at the end."""
        tail = self._tail
        tail.append(delta)
        if len(tail) >= BLOCK:
            self._join_tail()

    def __len__(self) -> int:
        return len(self._ends) + len(self._tail)

    def __getitem__(self, index: int) -> str:
        joined = len(self._ends)
        if index < 0:
            index += joined + len(self._tail)
        if index >= joined:
            return self._tail[index - joined]
        if index < 0:
            raise IndexError("DeltaStore index out of range")
        start = self._ends[index - 1] if index else 0
        block = bisect_right(self._starts, start) - 1
        offset = self._starts[block]
        return self._blocks[block][start - offset : self._ends[index] - offset]

    def text(self) -> str:
        """Every item, concatenated."""
        return "".join(self._blocks + self._tail) if self._tail else "".join(self._blocks)

    def text_from(self, index: int) -> str:
        """The items from *index* on, concatenated."""
        joined = len(self._ends)
        if index >= joined:
            return "".join(self._tail[index - joined :])
        if index <= 0:
            return self.text()
        start = self._ends[index - 1]
        block = bisect_right(self._starts, start) - 1
        head = self._blocks[block][start - self._starts[block] :]
        return "".join([head, *self._blocks[block + 1 :], *self._tail])

    def _join_tail(self) -> None:
        tail, self._tail = self._tail, []
        base = self._ends[-1] if self._ends else 0
        ends = list(accumulate(map(len, tail), initial=base))
        del ends[0]  # the initial value itself
        if ends[-1] > _WIDE_FROM and self._ends.typecode == "I":
            self._ends = array("Q", self._ends)
        self._ends.extend(ends)
        blocks, starts = self._blocks, self._starts
        blocks.append("".join(tail))
        starts.append(base)
        # A binary counter: merge while the newer block has grown as large as the one before.
        while len(blocks) > 1 and len(blocks[-1]) >= len(blocks[-2]):
            newer = blocks.pop()
            starts.pop()
            blocks[-1] += newer
