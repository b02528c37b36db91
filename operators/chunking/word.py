"""``WordChunking`` (alias ``"word"``): one chunk per whitespace-separated word."""

from __future__ import annotations

from operators.chunking.registry import register_chunking
from operators.chunking.strategy import ChunkingStrategy

__all__ = ["WordChunking"]


@register_chunking("word")
class WordChunking(ChunkingStrategy):
    """One chunk per whitespace-separated word; a word is complete once whitespace follows it."""

    def split(self, accumulated_text: str) -> list[str]:
        """Complete words; a word not yet followed by whitespace is withheld."""
        words = accumulated_text.split()
        if words and not accumulated_text[-1].isspace():
            words.pop()
        return words

    def flush(self, accumulated_text: str) -> list[str]:
        """The last word, if the text does not end in whitespace."""
        if not accumulated_text or accumulated_text[-1].isspace():
            return []
        return accumulated_text.split()[-1:]
