"""``SentenceChunking`` (alias ``"sentence"``): one chunk per sentence."""

from __future__ import annotations

import re

from operators.chunking.registry import register_chunking
from operators.chunking.strategy import ChunkingStrategy

__all__ = ["SentenceChunking"]

# Sentence end: ., ! or ?, optionally a closing quote or parenthesis, then whitespace.
_SENTENCE_END = re.compile("[.!?][\"'\u201d\u2019)]?\\s")


@register_chunking("sentence")
class SentenceChunking(ChunkingStrategy):
    """One chunk per sentence (Mellea's ``SentenceChunker`` rule).

    A sentence ends at ``.``, ``!`` or ``?``, optionally followed by a closing quote
    (straight or curly) or ``)``, once whitespace follows. The chunk keeps the
    punctuation and drops the whitespace. Abbreviations ("e.g. ") split, as in Mellea:
    this is a regular expression, not NLP. Whitespace between sentences is dropped;
    unlike Mellea, so is whitespace before the first one, which is what makes the
    strategy restartable at every chunk end.
    """

    def split(self, accumulated_text: str) -> list[str]:
        """Complete sentences; the unterminated tail is withheld."""
        # Called on every delta: most end no sentence, and say so without scanning.
        if _SENTENCE_END.search(accumulated_text) is None:
            return []
        return self._scan(accumulated_text)[0]

    def split_extended(self, accumulated_text: str, known: int) -> list[str]:
        """``split``, looking for a sentence end only where the new text can complete one."""
        # No sentence ended in the first *known* characters, and a sentence end is at most
        # three characters long: one the new text completes starts two characters before it
        # at the earliest. Scanning only there keeps a long sentence linear, not quadratic.
        if _SENTENCE_END.search(accumulated_text, known - 2 if known > 2 else 0) is None:
            return []
        return self._scan(accumulated_text)[0]

    def flush(self, accumulated_text: str) -> list[str]:
        """The unterminated tail, stripped of surrounding whitespace, if any is left."""
        tail = self._scan(accumulated_text)[1].rstrip()
        return [tail] if tail else []

    @staticmethod
    def _scan(text: str) -> tuple[list[str], str]:
        chunks: list[str] = []
        pos = len(text) - len(text.lstrip())
        while (match := _SENTENCE_END.search(text, pos)) is not None:
            chunks.append(text[pos : match.end() - 1])
            pos = match.end()
            while pos < len(text) and text[pos].isspace():
                pos += 1
        return chunks, text[pos:]
