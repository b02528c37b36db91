"""``WordChunking`` (alias ``"word"``): one chunk per whitespace-separated word."""

from __future__ import annotations

import re

from operators.chunking.registry import register_chunking
from operators.chunking.strategy import ChunkingStrategy

__all__ = ["WordChunking"]

# A word is complete exactly where a non-whitespace character is followed by whitespace
# (re's \s and str.split() agree on what whitespace is: str.isspace()).
_WORD_END = re.compile(r"\S\s")


@register_chunking("word")
class WordChunking(ChunkingStrategy):
    """One chunk per whitespace-separated word; a word is complete once whitespace follows it."""

    def split(self, accumulated_text: str) -> list[str]:
        """Complete words; a word not yet followed by whitespace is withheld."""
        words = accumulated_text.split()
        if words and not accumulated_text[-1].isspace():
            words.pop()
        return words

    def split_extended(self, accumulated_text: str, known: int) -> list[str]:
        """``split``, looking for a word end only where the new text can complete one."""
        # No word ended in the first *known* characters; a word end is two characters long.
        if _WORD_END.search(accumulated_text, known - 1 if known > 1 else 0) is None:
            return []
        return self.split(accumulated_text)

    def flush(self, accumulated_text: str) -> list[str]:
        """The last word, if the text does not end in whitespace."""
        if not accumulated_text or accumulated_text[-1].isspace():
            return []
        return accumulated_text.split()[-1:]
