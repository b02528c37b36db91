"""The built-in length checks count words of their own: they stop the run at the word that
crosses the limit, whatever the stream's chunking (a long sentence or paragraph included)."""

from __future__ import annotations

import asyncio

import pytest

from backends import ScriptedBackend
from engine import ChunkEvent, Instruction, SimpleContext, stream_with_chunking
from engine.checks import MaxCharacters, MaxSentences, MaxWords
from engine.core.requirements import Requirement

# One 30-word sentence (about 150 characters), then more.
LONG = " ".join(f"word{i}" for i in range(30)) + ". Then a short one. "


def tokens(text: str) -> list[str]:
    return [w + " " for w in text.split(" ") if w]


async def failing_run(check: Requirement, chunking: str) -> tuple[str, int, int, list[str]]:
    backend = ScriptedBackend(tokens(LONG))
    result = await stream_with_chunking(
        Instruction("Write."), backend, SimpleContext(), requirements=[check], chunking=chunking
    )
    events = [e async for e in result.events()]
    await asyncio.wait_for(result.acomplete(), 5)
    [(_, verdict)] = result.streaming_failures
    chunks = [e.text for e in events if isinstance(e, ChunkEvent)]
    return verdict.reason or "", backend.generations[0].deltas_sent, len(backend.deltas), chunks


@pytest.mark.asyncio
@pytest.mark.parametrize("chunking", ["sentence", "paragraph", "word"])
async def test_max_characters_fails_at_the_word_that_crosses_the_limit(chunking: str) -> None:
    reason, sent, total, chunks = await failing_run(MaxCharacters(80), chunking)
    # The word that crosses 80 characters, not the end of the 150-character sentence.
    count = int(reason.split()[0])
    assert 80 < count <= 80 + len("word29 "), reason
    assert sent < 20 < total
    assert "".join(chunks).count("word") <= 14


@pytest.mark.asyncio
@pytest.mark.parametrize("chunking", ["sentence", "paragraph"])
async def test_max_words_fails_at_the_first_word_over_the_limit(chunking: str) -> None:
    reason, sent, _, chunks = await failing_run(MaxWords(10), chunking)
    assert reason == "11 words so far, more than the limit of 10"
    assert sent <= 12 and chunks == []  # the sentence holding the 11th word is never delivered


@pytest.mark.asyncio
async def test_max_sentences_fails_at_the_first_word_of_the_sentence_over_the_limit() -> None:
    reason, sent, total, chunks = await failing_run(MaxSentences(1), "paragraph")
    assert reason == "2 sentences so far, more than the limit of 1"
    assert sent == 31 < total and chunks == []  # "Then" was the last delta sent
