"""``ParagraphChunking`` (alias ``"paragraph"``): one chunk per paragraph."""

from __future__ import annotations

import re
from typing import ClassVar

from operators.chunking.registry import register_chunking
from operators.chunking.strategy import ChunkingStrategy

__all__ = ["ParagraphChunking"]

_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
# A paragraph is complete exactly where text other than a newline is followed by a break.
_PARAGRAPH_END = re.compile(r"[^\n]\n\n")


@register_chunking("paragraph")
class ParagraphChunking(ChunkingStrategy):
    r"""One chunk per paragraph: text between runs of two or more ``\n``.

    A paragraph is complete once ``\n\n`` follows it. The flushed tail is returned
    byte for byte (a trailing single newline can matter inside a paragraph), as in
    Mellea. Only ``\n`` separators count; ``\r\n\r\n`` does not.
    """

    separator: ClassVar[str] = "\n\n"
    """Paragraphs shown joined stand a blank line apart."""

    def split(self, accumulated_text: str) -> list[str]:
        """Complete paragraphs; the tail not yet followed by a blank line is withheld."""
        parts = _PARAGRAPH_BREAK.split(accumulated_text)
        parts.pop()  # the tail: empty when the text ends with a break
        return [p for p in parts if p]

    def split_extended(self, accumulated_text: str, known: int) -> list[str]:
        """``split``, looking for a paragraph end only where the new text can complete one."""
        # No paragraph ended in the first *known* characters; an end is three characters
        # long, so one the new text completes starts two characters before it at the earliest.
        if _PARAGRAPH_END.search(accumulated_text, known - 2 if known > 2 else 0) is None:
            return []
        return self.split(accumulated_text)

    def flush(self, accumulated_text: str) -> list[str]:
        """The tail after the last paragraph break, unchanged, if it is not empty."""
        tail = _PARAGRAPH_BREAK.split(accumulated_text)[-1]
        return [tail] if tail else []
