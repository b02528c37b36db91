"""``RawDeltas``: no chunking, every delta of the model is a chunk (``chunking=None``)."""

from __future__ import annotations

from typing import ClassVar

from operators.chunking.strategy import ChunkingStrategy

__all__ = ["RawDeltas"]


class RawDeltas(ChunkingStrategy):
    """Every delta of the model is a chunk: nothing is withheld.

    What ``chunking=None`` selects in ``stream()`` (Mellea 0.8's raw deltas) and in the
    ``chunk`` operator. It has no alias: ``None`` names it.
    """

    separator: ClassVar[str] = ""
    """Deltas joined are the text."""

    def split(self, accumulated_text: str) -> list[str]:
        """All of *accumulated_text*: the Chunker hands over only the text after the last chunk,
        that is the new delta."""
        return [accumulated_text] if accumulated_text else []
