"""A test kit for chunking strategies: hypothesis strategies and the chunking laws.

Check your own strategy in one line (needs ``hypothesis``: ``pip install rxllm[testing]``)::

    from operators.testing import check_chunking_strategy
    check_chunking_strategy(MyChunking())

The laws, for any text and any slicing of it into deltas:

1. **verbatim**: ``split`` and ``flush`` return non-empty, verbatim substrings of the
   text, in order, and ``flush`` returns only text after the last ``split`` chunk;
2. **withholding**: ``split`` of a prefix of the text returns a prefix of ``split`` of
   the whole text (a chunk, once released, never changes);
3. **one pass**: a :class:`~operators.chunking.Chunker` fed the whole text releases
   ``split(text) + flush(text)``;
4. **delta invariance**: a ``Chunker`` fed any slicing releases the same chunks at the
   same offsets as one fed the whole text;
5. **extension**: ``split_extended(text, k)`` equals ``split(text)`` wherever
   ``split(text[:k])`` completes no chunk (the ``Chunker`` calls it on every delta);
6. **coverage** (optional): every non-whitespace character is in some chunk once
   flushed; pass ``require_coverage=False`` for a strategy that drops text on purpose.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from operators.chunking import Chunk, Chunker, ChunkingStrategy

__all__ = ["check_chunking_strategy", "check_laws", "slicings", "text_samples", "texts_with_slicings"]

# Pieces of model-like output: words, every sentence-end form the built-ins know,
# quotes, whitespace runs, paragraph breaks, multi-byte characters.
_PIECES = [
    "word",
    "The",
    "e.g.",
    "3.14",
    "x",
    "é",
    "漢字",
    "😀",
    "—",
    ",",
    ";",
    ":",
    ".",
    "!",
    "?",
    "...",
    "?!",
    '"',
    "'",
    "\u201d",
    "\u2019",
    ")",
    "(",
    " ",
    " ",
    " ",
    "  ",
    "\t",
    "\n",
    "\n\n",
    "\n\n\n",
    "\r\n",
    "\u00a0",
]


def text_samples(max_pieces: int = 40) -> st.SearchStrategy[str]:
    """Texts shaped like model output (words, punctuation, quotes, whitespace, breaks, unicode)."""
    shaped = st.lists(st.sampled_from(_PIECES), max_size=max_pieces).map("".join)
    raw = st.text(alphabet=st.sampled_from(sorted(set("".join(_PIECES)) | set("ab."))), max_size=max_pieces)
    return st.one_of(shaped, raw)


def slicings(text: str) -> st.SearchStrategy[list[str]]:
    """Every way of cutting *text* into consecutive deltas (empty deltas included)."""
    cuts = st.lists(st.integers(min_value=0, max_value=len(text)), max_size=len(text) + 2)

    def cut(points: list[int]) -> list[str]:
        bounds = [0, *sorted(points), len(text)]
        return [text[a:b] for a, b in pairwise(bounds)]

    return cuts.map(cut)


@st.composite
def texts_with_slicings(
    draw: st.DrawFn, texts: st.SearchStrategy[str] | None = None
) -> tuple[str, list[str]]:
    """A text and one slicing of it into deltas."""
    text = draw(texts if texts is not None else text_samples())
    return text, draw(slicings(text))


def _placed(chunks: Sequence[Chunk]) -> list[tuple[str, int, int, int]]:
    """Each chunk with its place: chunks compare as their text alone."""
    return [(str(c), c.chunk_index, c.start, c.end) for c in chunks]


def _run(strategy: ChunkingStrategy, deltas: Sequence[str]) -> list[Chunk]:
    chunker = Chunker(strategy)
    chunks = [c for delta in deltas for c in chunker.feed(delta)]
    return chunks + chunker.flush()


def _locate(strategy: ChunkingStrategy, method: str, pieces: list[str], text: str, start: int) -> int:
    pos = start
    for piece in pieces:
        assert piece, f"verbatim law: {strategy!r}.{method}({text!r}) returned an empty chunk"
        found = text.find(piece, pos)
        assert found >= 0, (
            f"verbatim law: {strategy!r}.{method}({text!r}) returned {piece!r}, "
            "which is not a verbatim substring of the text after the chunks before it"
        )
        pos = found + len(piece)
    return pos


def check_laws(
    strategy: ChunkingStrategy, text: str, deltas: Sequence[str], *, require_coverage: bool = True
) -> None:
    """Assert every chunking law for one *text* and one slicing of it; ``AssertionError`` names the law."""
    assert "".join(deltas) == text, "the deltas must concatenate to the text"
    whole = strategy.split(text)
    end = _locate(strategy, "split", whole, text, 0)
    _locate(strategy, "flush", strategy.flush(text), text, end)

    for cut in range(len(text) + 1):
        partial = strategy.split(text[:cut])
        assert whole[: len(partial)] == partial, (
            f"withholding law: {strategy!r}.split({text[:cut]!r}) = {partial!r} is not a prefix of "
            f"split({text!r}) = {whole!r}; a chunk was released before it was complete"
        )
        if not partial:
            extended = strategy.split_extended(text, cut)
            assert extended == whole, (
                f"extension law: {strategy!r}.split_extended({text!r}, {cut}) = {extended!r}, but "
                f"split gives {whole!r} (and split({text[:cut]!r}) completes no chunk)"
            )

    one_pass = _run(strategy, [text])
    expected = whole + strategy.flush(text)
    assert [c.text for c in one_pass] == expected, (
        f"one-pass law: a Chunker fed {text!r} whole released {[c.text for c in one_pass]!r}, but "
        f"split + flush give {expected!r}; the strategy is not restartable at chunk ends"
    )
    sliced = _run(strategy, deltas)
    assert _placed(sliced) == _placed(one_pass), (
        f"delta-invariance law: fed as {list(deltas)!r} the Chunker released {[c.text for c in sliced]!r}; "
        f"fed whole, {[c.text for c in one_pass]!r}"
    )
    for c in one_pass:
        assert text[c.start : c.end] == c, (
            f"offset law: chunk {c!r} (index {c.chunk_index}) does not match text[{c.start}:{c.end}] = "
            f"{text[c.start : c.end]!r}"
        )
    if require_coverage:
        covered: set[int] = set()
        for c in one_pass:
            covered.update(range(c.start, c.end))
        missing = [i for i, ch in enumerate(text) if not ch.isspace() and i not in covered]
        assert not missing, (
            f"coverage law: {strategy!r} never released {text[missing[0]]!r} "
            f"at offset {missing[0]} of {text!r}"
        )


def check_chunking_strategy(
    strategy: ChunkingStrategy,
    *,
    texts: st.SearchStrategy[str] | None = None,
    max_examples: int = 200,
    require_coverage: bool = True,
) -> None:
    """Check *strategy* against every law on generated texts and slicings (hypothesis).

    Raises hypothesis' falsifying example with the law's ``AssertionError`` if one fails.
    """

    # One falsifying example, the simplest, rather than a group of them.
    @settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        report_multiple_bugs=False,
    )
    @given(texts_with_slicings(texts))
    def laws_hold(example: tuple[str, list[str]]) -> None:
        text, deltas = example
        check_laws(strategy, text, deltas, require_coverage=require_coverage)

    laws_hold()
