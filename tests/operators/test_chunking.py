"""Chunking strategies, the Chunker, and the test kit (the kit is how our own strategies are checked)."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators import (
    Chunker,
    ChunkingStrategy,
    ParagraphChunking,
    SentenceChunking,
    WordChunking,
    resolve_chunking_strategy,
)
from operators.chunking import paragraph as paragraph_module
from operators.chunking import sentence as sentence_module
from operators.chunking import word as word_module
from operators.testing import check_chunking_strategy, check_laws, slicings, text_samples

BUILT_INS = [SentenceChunking(), WordChunking(), ParagraphChunking()]


@pytest.mark.parametrize("strategy", BUILT_INS, ids=repr)
def test_builtin_strategies_obey_every_law(strategy: ChunkingStrategy) -> None:
    check_chunking_strategy(strategy, max_examples=300)


@pytest.mark.parametrize(
    ("text", "chunks", "tail"),
    [
        ("Hello world. How are you? Fine", ["Hello world.", "How are you?"], ["Fine"]),
        ("Wait!  Double space.\tTab? ", ["Wait!", "Double space.", "Tab?"], []),
        ('He said "stop." Then left.', ['He said "stop."'], ["Then left."]),
        ("Curly\u201d no. (Aside.) End.", ["Curly\u201d no.", "(Aside.)"], ["End."]),
        ("Really?!\nYes.", ["Really?!"], ["Yes."]),
        ("e.g. this splits.", ["e.g."], ["this splits."]),  # a regex, not NLP, as in Mellea
        ("No terminator", [], ["No terminator"]),
        ("Ends with dot.", [], ["Ends with dot."]),
        ("  \n ", [], []),
        ("", [], []),
        ("3.14 is pi. ", ["3.14 is pi."], []),
    ],
)
def test_sentence_chunking_follows_mellea(text: str, chunks: list[str], tail: list[str]) -> None:
    strategy = SentenceChunking()
    assert strategy.split(text) == chunks
    assert strategy.flush(text) == tail


def test_sentence_chunking_drops_leading_whitespace_of_the_first_sentence() -> None:
    # The one documented difference from Mellea (which keeps it on the first sentence only).
    assert SentenceChunking().split("  \nHi. There. ") == ["Hi.", "There."]


@pytest.mark.parametrize(
    ("text", "chunks", "tail"),
    [
        ("alpha beta gam", ["alpha", "beta"], ["gam"]),
        ("  lead  trail  ", ["lead", "trail"], []),
        ("one\ttwo\nthree", ["one", "two"], ["three"]),
        ("", [], []),
    ],
)
def test_word_chunking(text: str, chunks: list[str], tail: list[str]) -> None:
    assert WordChunking().split(text) == chunks
    assert WordChunking().flush(text) == tail


@pytest.mark.parametrize(
    ("text", "chunks", "tail"),
    [
        (
            "First para.\n\nSecond\nstill second.\n\n\nThird",
            ["First para.", "Second\nstill second."],
            ["Third"],
        ),
        ("\n\nLeading break\n\n", ["Leading break"], []),
        ("Only one\n", [], ["Only one\n"]),  # the tail is released byte for byte
        ("A\r\n\r\nB", [], ["A\r\n\r\nB"]),  # CRLF breaks are not paragraph breaks (as in Mellea)
    ],
)
def test_paragraph_chunking(text: str, chunks: list[str], tail: list[str]) -> None:
    assert ParagraphChunking().split(text) == chunks
    assert ParagraphChunking().flush(text) == tail


def test_resolve_aliases_and_instances() -> None:
    assert isinstance(resolve_chunking_strategy("sentence"), SentenceChunking)
    assert isinstance(resolve_chunking_strategy("word"), WordChunking)
    assert isinstance(resolve_chunking_strategy("paragraph"), ParagraphChunking)
    mine = WordChunking()
    assert resolve_chunking_strategy(mine) is mine


def test_unknown_alias_lists_the_aliases() -> None:
    with pytest.raises(ValueError, match="'sentence', 'word', 'paragraph'") as info:
        resolve_chunking_strategy("sentences")
    assert "'sentences'" in str(info.value)
    with pytest.raises(TypeError, match="ChunkingStrategy"):
        resolve_chunking_strategy(3)  # type: ignore[arg-type]


def test_chunker_reports_offsets_into_the_whole_output() -> None:
    chunker = Chunker(SentenceChunking())
    text = "One. Two!  Three"
    chunks = [c for ch in text for c in chunker.feed(ch)] + chunker.flush()
    assert [(c, c.chunk_index, c.start, c.end) for c in chunks] == [
        ("One.", 0, 0, 4),
        ("Two!", 1, 5, 9),
        ("Three", 2, 11, 16),
    ]
    assert all(text[c.start : c.end] == c.text for c in chunks)


def test_chunker_keeps_only_the_pending_fragment() -> None:
    chunker = Chunker(SentenceChunking())
    for _ in range(1000):
        chunker.feed("Sentence number n. ")
    # Linear time rests on this: the strategy is only ever given the current fragment.
    assert chunker.pending == " "
    assert chunker.chunks_released == 1000


def test_chunker_refuses_feed_after_flush() -> None:
    chunker = Chunker(WordChunking())
    chunker.flush()
    with pytest.raises(RuntimeError, match="new Chunker"):
        chunker.feed("x")


class Inventing(ChunkingStrategy):
    """Returns text that is not in the input."""

    def split(self, accumulated_text: str) -> list[str]:
        return ["made up"] if accumulated_text else []


class Empty(ChunkingStrategy):
    def split(self, accumulated_text: str) -> list[str]:
        return [""] if accumulated_text else []


@pytest.mark.parametrize(
    ("strategy", "problem"), [(Inventing(), "not a verbatim substring"), (Empty(), "empty chunk")]
)
def test_chunker_rejects_a_strategy_that_breaks_the_rules_and_names_it(
    strategy: ChunkingStrategy, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem) as info:
        Chunker(strategy).feed("some text")
    assert type(strategy).__name__ in str(info.value)


class MelleaStyleSentences(ChunkingStrategy):
    """Mellea's exact rule: the first sentence keeps its leading whitespace. Not restartable."""

    def split(self, accumulated_text: str) -> list[str]:
        body = SentenceChunking().split(accumulated_text)
        lead = accumulated_text[: len(accumulated_text) - len(accumulated_text.lstrip())]
        return [lead + body[0], *body[1:]] if body else []

    def flush(self, accumulated_text: str) -> list[str]:
        if SentenceChunking().split(accumulated_text):
            return SentenceChunking().flush(accumulated_text)
        tail = accumulated_text.rstrip()
        return [tail] if tail else []


class ReleasesEarly(ChunkingStrategy):
    """Releases the last word before it is complete."""

    def split(self, accumulated_text: str) -> list[str]:
        return accumulated_text.split()


class DropsTail(ChunkingStrategy):
    def split(self, accumulated_text: str) -> list[str]:
        return WordChunking().split(accumulated_text)


class LooksOnlyAtTheDelta(SentenceChunking):
    """Misses a sentence end that straddles two deltas ("word." then " next")."""

    def split_extended(self, accumulated_text: str, known: int) -> list[str]:
        if not any(mark in accumulated_text[known:] for mark in ".!?"):
            return []
        return self.split(accumulated_text)


@pytest.mark.parametrize(
    ("strategy", "law"),
    [
        (MelleaStyleSentences(), "(one-pass|delta-invariance) law"),
        (ReleasesEarly(), "withholding law"),
        (DropsTail(), "coverage law"),
        (LooksOnlyAtTheDelta(), "extension law"),
    ],
    ids=lambda v: v if isinstance(v, str) else type(v).__name__,
)
def test_the_kit_catches_broken_strategies(strategy: ChunkingStrategy, law: str) -> None:
    with pytest.raises(AssertionError, match=law):
        check_chunking_strategy(strategy, max_examples=300)


def test_the_kit_can_waive_coverage_for_strategies_that_drop_text_on_purpose() -> None:
    check_chunking_strategy(DropsTail(), max_examples=100, require_coverage=False)


def test_a_variant_of_a_built_in_that_overrides_split_alone_is_asked_through_its_split() -> None:
    class NoQuestions(SentenceChunking):
        def split(self, accumulated_text: str) -> list[str]:
            return [s for s in super().split(accumulated_text) if not s.endswith("?")]

    chunker = Chunker(NoQuestions())
    released = [c for delta in ["Why", "? Yes", ". "] for c in chunker.feed(delta)]
    assert released == ["Yes."]


def test_check_laws_on_one_example() -> None:
    check_laws(SentenceChunking(), "A. B", ["A", ". ", "B"])
    with pytest.raises(AssertionError, match="concatenate"):
        check_laws(SentenceChunking(), "A. B", ["A"])


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_slicings_reassemble_the_text(data: st.DataObject) -> None:
    text = data.draw(text_samples())
    assert "".join(data.draw(slicings(text))) == text


class _CountingPattern:
    """A compiled pattern that counts the characters its searches are given to read."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self.scanned = 0

    def search(self, text: str, pos: int = 0) -> re.Match[str] | None:
        self.scanned += len(text) - pos
        return self.pattern.search(text, pos)


@pytest.mark.parametrize(
    ("strategy", "module", "pattern", "unit"),
    [
        (SentenceChunking(), sentence_module, "_SENTENCE_END", "word, "),
        (ParagraphChunking(), paragraph_module, "_PARAGRAPH_END", "One. Two.\n"),
        (WordChunking(), word_module, "_WORD_END", "x"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, ChunkingStrategy) else None,
)
def test_a_chunk_that_grows_over_many_deltas_is_read_in_linear_time(
    monkeypatch: pytest.MonkeyPatch, strategy: ChunkingStrategy, module: Any, pattern: str, unit: str
) -> None:
    # One sentence (paragraph, word) of 20,000 characters in 1-character deltas: searching the
    # whole pending text on every delta reads ~200 million characters, the extension ~60,000.
    counting = _CountingPattern(getattr(module, pattern))
    monkeypatch.setattr(module, pattern, counting)
    n = 20_000
    chunker = Chunker(strategy)
    for char in (unit * n)[:n]:
        assert chunker.feed(char) == []
    assert counting.scanned <= 4 * n
    assert len(chunker.pending) == n


class _NeverEnds(ChunkingStrategy):
    def split(self, accumulated_text: str) -> list[str]:
        return []

    def split_extended(self, accumulated_text: str, known: int) -> list[str]:
        return []


def test_the_chunker_extends_its_pending_text_without_copying_it() -> None:
    # A million 1-character deltas in one chunk: copying the pending text on every delta moves
    # ~500 GB (minutes); extending it in place takes well under a second. The bound is a
    # sanity bound, 20x what it takes here.
    chunker = Chunker(_NeverEnds())
    started = time.perf_counter()
    for _ in range(1_000_000):
        chunker.feed("x")
    assert time.perf_counter() - started < 8.0
    assert len(chunker.pending) == 1_000_000
