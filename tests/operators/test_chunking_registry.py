"""The chunking aliases: a strategy and its alias are registered together, in one file, and
every place that takes ``chunking=`` (the pipeline, a requirement's own chunking, the
command line's ``--chunking``) reads that one registry."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from reactivex import Subject

from backends.scripted import ScriptedBackend
from engine import Requirement, SimpleContext, stream_with_chunking
from engine.cli import EXIT_OK, main
from engine.core.events import ChunkEvent
from engine.core.requirements import PartialValidationResult
from operators import (
    CHUNKING_ALIASES,
    Chunk,
    ChunkingStrategy,
    JsonChunking,
    ParagraphChunking,
    RawDeltas,
    SentenceChunking,
    WordChunking,
    chunk,
    register_chunking,
    resolve_chunking_strategy,
)
from operators.chunking import ScanningStrategy
from operators.testing import check_chunking_strategy, text_samples

# The strategies that cut prose (JSON chunking reads JSON documents: its own tests).
TEXT_ALIASES = {
    alias: cls for alias, cls in CHUNKING_ALIASES.items() if not issubclass(cls, ScanningStrategy)
}

CLAUSE_END = re.compile(r"[,;.!?]\s")


def define_clause_chunking() -> type[ChunkingStrategy]:
    """A new strategy, complete in one place: its class and its alias."""

    @register_chunking("clause")
    class ClauseChunking(ChunkingStrategy):
        """One chunk per clause: text up to ``,``, ``;``, ``.``, ``!`` or ``?`` followed by whitespace."""

        def split(self, accumulated_text: str) -> list[str]:
            return self._scan(accumulated_text)[0]

        def flush(self, accumulated_text: str) -> list[str]:
            tail = self._scan(accumulated_text)[1].rstrip()
            return [tail] if tail else []

        @staticmethod
        def _scan(text: str) -> tuple[list[str], str]:
            chunks: list[str] = []
            pos = len(text) - len(text.lstrip())
            while (match := CLAUSE_END.search(text, pos)) is not None:
                chunks.append(text[pos : match.end() - 1])
                pos = match.end()
                while pos < len(text) and text[pos].isspace():
                    pos += 1
            return chunks, text[pos:]

    return ClauseChunking


@pytest.fixture
def registry() -> Iterator[dict[str, type[ChunkingStrategy]]]:
    """The alias registry, put back as it was after the test."""
    before = dict(CHUNKING_ALIASES)
    CHUNKING_ALIASES.pop("clause", None)
    try:
        yield CHUNKING_ALIASES
    finally:
        CHUNKING_ALIASES.clear()
        CHUNKING_ALIASES.update(before)


TEXT = "First, a clause; then another. Last one"
CLAUSES = ["First,", "a clause;", "then another.", "Last one"]


class Recording(Requirement):
    """Records every chunk its ``stream_validate`` receives; has no opinion on them."""

    def __init__(self, chunking: Any = None) -> None:
        super().__init__("records chunks", chunking=chunking)
        self.seen: list[str] = []

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        self.seen.append(chunk)
        return PartialValidationResult("unknown")


@pytest.mark.asyncio
async def test_a_new_strategy_is_one_definition_then_usable_by_alias_everywhere(registry: Any) -> None:
    clause = define_clause_chunking()
    assert registry["clause"] is clause
    assert isinstance(resolve_chunking_strategy("clause"), clause)
    check_chunking_strategy(clause(), max_examples=50)

    own = Recording(chunking="clause")  # a requirement's own chunking, by alias
    stream_chunks = Recording()  # the stream's chunks
    deltas = [TEXT[i : i + 3] for i in range(0, len(TEXT), 3)]
    result = await stream_with_chunking(
        "go", ScriptedBackend(deltas), SimpleContext(), chunking="clause", requirements=[own, stream_chunks]
    )
    events = [e async for e in result.events()]
    assert [e.text for e in events if isinstance(e, ChunkEvent)] == CLAUSES
    assert stream_chunks.seen == CLAUSES
    assert own.seen == CLAUSES


def test_the_command_line_offers_and_runs_a_registered_strategy(
    registry: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["stream", "x", "--backend", "scripted", "--chunking", "clause"])
    assert "invalid choice: 'clause'" in capsys.readouterr().err

    define_clause_chunking()
    with pytest.raises(SystemExit):
        main(["stream", "--help"])
    assert re.search(r"--chunking \{sentence,word,paragraph,json,clause\}", capsys.readouterr().out)
    code = main(["stream", "x", "--backend", "scripted", "--delay", "0", "--chunking", "clause", "--json"])
    assert code == EXIT_OK
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    chunks = [e["text"] for e in events if e["type"] == "ChunkEvent"]
    assert chunks[:3] == [
        "A sourdough starter is a living culture of wild yeast and lactic acid bacteria,",
        "so keeping it healthy is mostly about a steady routine.",
        "Feed it at the same time every day with equal weights of flour and water,",
    ]


def test_the_built_in_aliases_in_their_order() -> None:
    assert list(CHUNKING_ALIASES.items()) == [
        ("sentence", SentenceChunking),
        ("word", WordChunking),
        ("paragraph", ParagraphChunking),
        ("json", JsonChunking),
    ]
    with pytest.raises(ValueError, match="Choose from: 'sentence', 'word', 'paragraph'"):
        resolve_chunking_strategy("clause")


def test_registering_the_same_class_again_changes_nothing(registry: Any) -> None:
    clause = define_clause_chunking()
    assert register_chunking("clause")(clause) is clause
    assert list(registry).count("clause") == 1 and registry["clause"] is clause


def test_an_alias_names_one_class(registry: Any) -> None:
    define_clause_chunking()
    with pytest.raises(
        ValueError, match=r"alias 'clause' already names .*ClauseChunking; choose another alias"
    ):
        define_clause_chunking()  # another class object under the same alias
    with pytest.raises(
        ValueError, match=re.escape("'word' already names operators.chunking.word.WordChunking")
    ):

        @register_chunking("word")
        class Words(WordChunking):
            pass


@pytest.mark.parametrize(
    ("alias", "error", "message"),
    [
        (3, TypeError, "register_chunking\\(alias=...\\) takes a str, got int: 3"),
        ("", ValueError, "a non-empty name without whitespace .* got ''"),
        ("two words", ValueError, "got 'two words'"),
    ],
)
def test_a_bad_alias_is_refused_naming_it(alias: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        register_chunking(alias)


def test_only_a_strategy_class_can_be_registered(registry: Any) -> None:
    with pytest.raises(
        TypeError, match="register_chunking\\('clause'\\) decorates a ChunkingStrategy subclass"
    ):
        register_chunking("clause")(str)  # type: ignore[type-var]
    assert "clause" not in registry


def test_none_resolves_to_none_and_the_chunk_operator_then_passes_deltas() -> None:
    assert resolve_chunking_strategy(None) is None
    subject: Subject[str] = Subject()
    got: list[Chunk] = []
    subject.pipe(chunk(None)).subscribe(got.append)
    for delta in ["Hel", "lo. W", "", "orld"]:
        subject.on_next(delta)
    subject.on_completed()
    assert [(c.text, c.chunk_index, c.start, c.end) for c in got] == [
        ("Hel", 0, 0, 3),
        ("lo. W", 1, 3, 8),
        ("orld", 2, 8, 12),
    ]
    assert isinstance(RawDeltas(), ChunkingStrategy) and RawDeltas not in CHUNKING_ALIASES.values()


@given(text_samples())
def test_chunks_joined_by_their_strategys_separator_cut_back_into_the_same_chunks(text: str) -> None:
    # The separator is what the command line puts between chunks when it cannot see the
    # model's own layout: it must not merge or split them.
    for strategy_class in TEXT_ALIASES.values():
        strategy = strategy_class()
        chunks = strategy.split(text) + strategy.flush(text)
        joined = strategy.separator.join(chunks)
        assert strategy.split(joined) + strategy.flush(joined) == chunks, strategy
