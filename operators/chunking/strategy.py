"""Chunking strategies: where a stream of text is cut into units for validation.

A :class:`ChunkingStrategy` is stateless (Mellea's interface): ``split(text)`` returns
the complete chunks of *text* and withholds the trailing fragment; ``flush(text)``
releases that fragment at the natural end of the stream.

Strategies are driven incrementally by :class:`~operators.chunking.Chunker`, which
hands ``split`` only the text after the last chunk it released. A strategy therefore
has to be *restartable at chunk ends*: for the chunks ``c1..ck`` of ``split(t)`` with
``ck`` ending at offset ``e``, ``split(t + x) == [c1..ck] + split(t[e:] + x)``. The
built-in strategies are; ``operators.testing.check_chunking_strategy`` checks yours.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

__all__ = [
    "CHUNKING_ALIASES",
    "ChunkingStrategy",
    "ParagraphChunking",
    "SentenceChunking",
    "WordChunking",
    "resolve_chunking_strategy",
]


class ChunkingStrategy(ABC):
    """Cuts text into chunks. Stateless: the same text always gives the same chunks."""

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


# Sentence end: ., ! or ?, optionally a closing quote or parenthesis, then whitespace.
_SENTENCE_END = re.compile("[.!?][\"'\u201d\u2019)]?\\s")
_WHITESPACE = re.compile(r"\s+")
_PARAGRAPH_BREAK = re.compile(r"\n{2,}")


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


class ParagraphChunking(ChunkingStrategy):
    r"""One chunk per paragraph: text between runs of two or more ``\n``.

    A paragraph is complete once ``\n\n`` follows it. The flushed tail is returned
    byte for byte (a trailing single newline can matter inside a paragraph), as in
    Mellea. Only ``\n`` separators count; ``\r\n\r\n`` does not.
    """

    def split(self, accumulated_text: str) -> list[str]:
        """Complete paragraphs; the tail not yet followed by a blank line is withheld."""
        parts = _PARAGRAPH_BREAK.split(accumulated_text)
        parts.pop()  # the tail: empty when the text ends with a break
        return [p for p in parts if p]

    def flush(self, accumulated_text: str) -> list[str]:
        """The tail after the last paragraph break, unchanged, if it is not empty."""
        tail = _PARAGRAPH_BREAK.split(accumulated_text)[-1]
        return [tail] if tail else []


CHUNKING_ALIASES: dict[str, type[ChunkingStrategy]] = {
    "sentence": SentenceChunking,
    "word": WordChunking,
    "paragraph": ParagraphChunking,
}
"""The names ``stream_with_chunking(chunking=...)`` accepts."""


def resolve_chunking_strategy(chunking: str | ChunkingStrategy) -> ChunkingStrategy:
    """A strategy instance from an alias (``"sentence"``, ``"word"``, ``"paragraph"``) or an instance."""
    if isinstance(chunking, ChunkingStrategy):
        return chunking
    if isinstance(chunking, str):
        strategy = CHUNKING_ALIASES.get(chunking)
        if strategy is not None:
            return strategy()
        raise ValueError(
            f"Unknown chunking alias {chunking!r}. Choose from: {', '.join(map(repr, CHUNKING_ALIASES))}, "
            "or pass a ChunkingStrategy instance."
        )
    raise TypeError(
        f"chunking must be one of {', '.join(map(repr, CHUNKING_ALIASES))} or a ChunkingStrategy instance, "
        f"got {type(chunking).__name__}"
    )
