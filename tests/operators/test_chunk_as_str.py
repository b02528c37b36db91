"""A chunk is a ``str`` that knows its place: Mellea's ``Chunker`` returns lists of ``str``, so
code written against it works here, while ``index``, ``start``, ``end`` and ``gap`` stay readable
(also by a requirement's ``stream_validate``, which receives the chunk itself)."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest
from hypothesis import given

from backends.scripted import ScriptedBackend
from engine import PartialValidationResult, Requirement, SimpleContext, stream_with_chunking
from operators import CHUNKING_ALIASES, Chunk, Chunker, SentenceChunking, WordChunking
from operators.chunking import ScanningStrategy
from operators.testing import texts_with_slicings

# The strategies that cut prose (JSON chunking reads JSON documents: its own tests).
TEXT_ALIASES = {
    alias: cls for alias, cls in CHUNKING_ALIASES.items() if not issubclass(cls, ScanningStrategy)
}


def feed_all(chunker: Chunker, deltas: list[str]) -> list[Chunk]:
    return [c for delta in deltas for c in chunker.feed(delta)] + chunker.flush()


def test_feed_and_flush_return_what_a_list_of_str_equals() -> None:
    chunker = Chunker(WordChunking())
    assert chunker.feed("hel") == []
    assert chunker.feed("lo wor") == ["hello"]
    assert chunker.feed("ld ") == ["world"]
    assert chunker.feed("tail") == []
    assert chunker.flush() == ["tail"]


@given(texts_with_slicings())
def test_every_chunk_is_its_text_and_keeps_its_place(example: tuple[str, list[str]]) -> None:
    text, deltas = example
    for strategy_class in TEXT_ALIASES.values():
        strategy = strategy_class()
        chunks = feed_all(Chunker(strategy), deltas)
        assert chunks == strategy.split(text) + strategy.flush(text)  # Mellea's equality: lists of str
        end = 0
        for i, c in enumerate(chunks):
            assert isinstance(c, str) and isinstance(c, Chunk)
            assert (c.chunk_index, text[c.start : c.end], c.gap, c.text) == (i, c, text[end : c.start], c)
            assert hash(c) == hash(str(c)) and repr(c) == repr(str(c)) and f"{c}" == str(c)
            end = c.end


def test_a_chunk_works_wherever_a_str_does() -> None:
    c = Chunk("Hi there.", 3, 10, 19, gap=" ")
    assert {c: 1}["Hi there."] == 1 and "Hi there." in {c}
    assert c.split() == ["Hi", "there."] and c.upper() == "HI THERE." and c + "!" == "Hi there.!"
    assert type(c.upper()) is str and type(c + "!") is str and type(str(c)) is str  # no place
    assert c.endswith(".") and len(c) == 9 and c[:2] == "Hi"
    assert sorted([Chunk("b", 0, 0, 1), Chunk("a", 1, 2, 3)]) == ["a", "b"]
    assert c.index("there") == 3 and c.count("e") == 2 and c.find("x") == -1  # str's own methods
    assert not set(vars(c)) & set(dir(str)), "a field of Chunk hides a str attribute"


def test_equal_text_is_equal_wherever_it_stands() -> None:
    first, again = Chunk("Yes.", 0, 0, 4), Chunk("Yes.", 5, 40, 44)
    assert first == again and (first.chunk_index, first.start) != (again.chunk_index, again.start)


def test_a_chunk_cannot_be_changed() -> None:
    c = Chunk("a", 0, 0, 1)
    for name in ("index", "start", "end", "gap", "text", "other"):
        with pytest.raises(AttributeError):
            setattr(c, name, 5)
        with pytest.raises(AttributeError):
            delattr(c, name)
    assert (c.chunk_index, c.start, c.end, c.gap) == (0, 0, 1, "")


@pytest.mark.parametrize(
    "clone",
    [copy.copy, copy.deepcopy, lambda c: pickle.loads(pickle.dumps(c))],
    ids=["copy", "deepcopy", "pickle"],
)
def test_copies_keep_the_place(clone: Any) -> None:
    c = Chunk("Two.", 1, 5, 9, gap=" ")
    other = clone(c)
    assert type(other) is Chunk and other == c
    assert (other.chunk_index, other.start, other.end, other.gap) == (1, 5, 9, " ")


class Places(Requirement):
    """Records what its ``stream_validate`` received: the object and the place it reads on it."""

    def __init__(self, chunking: Any = None) -> None:
        super().__init__("records places", chunking=chunking)
        self.seen: list[tuple[type, str, int, int, int]] = []

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        assert isinstance(chunk, Chunk)
        self.seen.append((type(chunk), chunk, chunk.chunk_index, chunk.start, chunk.end))
        return PartialValidationResult("unknown")


@pytest.mark.asyncio
async def test_stream_validate_receives_the_chunk_with_its_place() -> None:
    text = "  One two. Three four!  Five"
    deltas = [text[i : i + 3] for i in range(0, len(text), 3)]
    stream_chunks, own_words = Places(), Places(chunking="word")
    result = await stream_with_chunking(
        "go",
        ScriptedBackend(deltas),
        SimpleContext(),
        chunking="sentence",
        requirements=[stream_chunks, own_words],
    )
    delivered = [c async for c in result.astream()]
    assert delivered == ["One two.", "Three four!", "Five"] and result.full_text == text
    assert stream_chunks.seen == [
        (Chunk, "One two.", 0, 2, 10),
        (Chunk, "Three four!", 1, 11, 22),
        (Chunk, "Five", 2, 24, 28),
    ]
    words = ["One", "two.", "Three", "four!", "Five"]
    assert [(t, s, i) for t, s, i, _, _ in own_words.seen] == [(Chunk, w, i) for i, w in enumerate(words)]
    assert all(text[start:end] == s for _, s, _, start, end in own_words.seen)


def test_sentence_chunks_from_a_mellea_style_loop() -> None:
    # Code written for Mellea: collect str chunks, join them, compare with str literals.
    chunker = Chunker(SentenceChunking())
    out: list[str] = []
    for delta in ["Hello wor", "ld. Bye", " now. End"]:
        out.extend(chunker.feed(delta))
    out.extend(chunker.flush())
    assert out == ["Hello world.", "Bye now.", "End"] and " ".join(out) == "Hello world. Bye now. End"
