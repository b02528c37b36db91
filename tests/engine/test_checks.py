"""The ready-made requirements of ``engine.checks``: per chunk, on the whole output, and in a run."""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.scripted import ScriptedBackend
from engine import checks as checks_module
from engine.assembly import stream_with_chunking
from engine.checks import (
    ChunkCheck,
    ForbiddenWords,
    MaxCharacters,
    MaxSentences,
    MaxWords,
    MustNotMatch,
    TextCheck,
    count_sentences,
    req,
)
from engine.core.components import Instruction
from engine.core.context import Context, SimpleContext
from engine.core.events import CompletedEvent, FullValidationEvent, QuickCheckEvent, StreamingDoneEvent
from engine.core.requirements import PartialValidationResult, Requirement, ValidationResult
from engine.core.thunk import ModelOutputThunk
from operators.chunking import resolve_chunking_strategy

BACKEND = ScriptedBackend([])
CTX = SimpleContext()


async def feed(requirement: Requirement, chunks: Sequence[str]) -> list[PartialValidationResult]:
    """Run a copy of *requirement* over *chunks*, as the engine does; return every verdict."""
    running = copy.copy(requirement)
    return [await running.stream_validate(c, backend=BACKEND, ctx=CTX) for c in chunks]


def output_ctx(text: str) -> Context:
    """A context that ends with a computed model output *text*, as ``validate`` receives it."""
    return SimpleContext().add(Instruction("q")).add(ModelOutputThunk(value=text))


async def final(requirement: Requirement, text: str) -> ValidationResult:
    return await copy.copy(requirement).validate(BACKEND, output_ctx(text))


def chunks_of(text: str, chunking: str) -> list[str]:
    """The chunks a built-in strategy cuts *text* into, trailing fragment included."""
    strategy = resolve_chunking_strategy(chunking)
    return strategy.split(text) + strategy.flush(text)


# -- count_sentences -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("   ", 0),
        ("One.", 1),
        ("One", 1),
        ("One. Two! Three? Four", 4),
        ("Wait... what?! Yes.", 3),
        ('He said "stop." Then left.', 2),
        ("Pi is 3.14 exactly.", 1),
        ("First paragraph.\n\nSecond one.", 2),
    ],
)
def test_count_sentences(text: str, expected: int) -> None:
    assert count_sentences(text) == expected


# -- MaxSentences ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_max_sentences_fails_when_the_sentence_over_the_limit_begins() -> None:
    verdicts = await feed(MaxSentences(2), ["One.", "Two.", "Three."])
    assert [v.success for v in verdicts] == ["unknown", "unknown", "fail"]
    assert verdicts[2].reason == "3 sentences so far, more than the limit of 2"


@pytest.mark.asyncio
async def test_max_sentences_counts_across_word_chunks() -> None:
    verdicts = await feed(MaxSentences(1), ["It", "is", "done.", "Really"])
    assert [v.success for v in verdicts] == ["unknown", "unknown", "unknown", "fail"]


_SENTENCE_PIECES = ["One", "two", ".", "!", "?", "...", '"', ")", " ", "  ", "\n", "e.g.", "3.14"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.sampled_from(_SENTENCE_PIECES), max_size=6).map("".join), max_size=8))
def test_max_sentences_counts_a_stream_as_count_sentences_counts_its_chunks_joined(chunks: list[str]) -> None:
    # Whatever the chunks, the streaming count (open sentence included) is the count of the
    # chunks joined by the whitespace the chunker dropped between them.
    limit = 2
    verdicts = asyncio.run(feed(MaxSentences(limit), chunks))
    for n, verdict in enumerate(verdicts, start=1):
        expected = count_sentences(" ".join(chunks[:n]))
        assert (verdict.success == "fail") == (expected > limit), (chunks[:n], expected, verdict)
        if verdict.success == "fail":
            assert verdict.reason == f"{expected} sentences so far, more than the limit of {limit}"
            break


@pytest.mark.asyncio
async def test_max_sentences_reads_only_the_new_chunk_of_an_open_sentence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 20,000 one-word chunks of one open sentence: re-reading the open sentence on every
    # chunk reads ~200 million characters; reading each chunk once, ~120,000.
    read = 0
    pattern = checks_module._SENTENCE_END

    class Counting:
        def finditer(self, text: str) -> Any:
            nonlocal read
            read += len(text)
            return pattern.finditer(text)

    monkeypatch.setattr(checks_module, "_SENTENCE_END", Counting())
    check = MaxSentences(1)
    for _ in range(20_000):
        verdict = await check.stream_validate("word", backend=None, ctx=None)  # type: ignore[arg-type]
    assert verdict.success == "unknown"
    assert read <= 6 * 20_000


@pytest.mark.asyncio
async def test_max_sentences_validate_counts_the_whole_output() -> None:
    assert (await final(MaxSentences(2), "One. Two.")).as_bool()
    result = await final(MaxSentences(2), "One. Two. Three")
    assert not result
    assert result.reason == "3 sentences, over the limit of 2"


@pytest.mark.asyncio
async def test_each_run_starts_counting_from_zero() -> None:
    original = MaxSentences(1)
    assert [v.success for v in await feed(original, ["A.", "B."])] == ["unknown", "fail"]
    # The original was copied, so a second run counts afresh.
    assert [v.success for v in await feed(original, ["A."])] == ["unknown"]
    # Even a copy of a used requirement does not share its counts with it.
    used = copy.copy(original)
    await used.stream_validate("A.", backend=BACKEND, ctx=CTX)
    again = copy.copy(used)
    await again.stream_validate("B.", backend=BACKEND, ctx=CTX)
    verdict = await used.stream_validate("C.", backend=BACKEND, ctx=CTX)
    assert verdict.reason == "2 sentences so far, more than the limit of 1"


# -- MaxWords / MaxCharacters ----------------------------------------------------------


@pytest.mark.asyncio
async def test_max_words() -> None:
    verdicts = await feed(MaxWords(4), ["one two.", "three", "four five"])
    assert [v.success for v in verdicts] == ["unknown", "unknown", "fail"]
    assert verdicts[-1].reason == "5 words so far, more than the limit of 4"
    assert (await final(MaxWords(4), "one two three four")).as_bool()
    assert not (await final(MaxWords(4), "one two three four five")).as_bool()


@pytest.mark.asyncio
async def test_max_characters_counts_the_dropped_boundary_whitespace() -> None:
    # "Hi." + " " + "Yo." = 7 characters: the chunker dropped the space between them.
    assert [v.success for v in await feed(MaxCharacters(7), ["Hi.", "Yo."])] == ["unknown", "unknown"]
    assert [v.success for v in await feed(MaxCharacters(6), ["Hi.", "Yo."])] == ["unknown", "fail"]
    assert (await final(MaxCharacters(7), "Hi. Yo.")).as_bool()
    assert not (await final(MaxCharacters(6), "Hi. Yo.")).as_bool()


@pytest.mark.parametrize(
    ("limit", "error"), [(-1, ValueError), (1.5, TypeError), ("3", TypeError), (True, TypeError)]
)
def test_limits_must_be_whole_numbers(limit: object, error: type[Exception]) -> None:
    for cls in (MaxSentences, MaxWords, MaxCharacters):
        with pytest.raises(error, match=f"{cls.__name__} limit must be a whole number >= 0"):
            cls(limit)  # type: ignore[arg-type]


# -- ForbiddenWords --------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("chunk", "verdict"),
    [
        ("The cat sat.", "fail"),
        ("CAT!", "fail"),
        ("Cats are fine.", "pass"),
        ("A category error.", "pass"),
        ("concat(a, b)", "pass"),
        ("the cat's toy", "fail"),
    ],
)
async def test_forbidden_words_are_whole_words_in_any_case(chunk: str, verdict: str) -> None:
    [result] = await feed(ForbiddenWords(["cat"]), [chunk])
    assert result.success == verdict


@pytest.mark.asyncio
async def test_forbidden_phrase_across_chunks() -> None:
    verdicts = await feed(ForbiddenWords(["New York"]), ["I", "love", "new", "york", "city"])
    assert [v.success for v in verdicts] == ["pass", "pass", "pass", "fail", "pass"]
    assert verdicts[3].reason == "forbidden word 'new york'"
    # Not a match when something else comes between.
    verdicts = await feed(ForbiddenWords(["New York"]), ["new", "jersey", "york"])
    assert all(v.success == "pass" for v in verdicts)


@pytest.mark.asyncio
async def test_forbidden_words_validate_and_special_characters() -> None:
    reqs = ForbiddenWords(["c++", "risk-free"])
    assert not (await final(reqs, "Use C++ here.")).as_bool()
    assert not (await final(reqs, "It is Risk-Free!")).as_bool()
    assert (await final(reqs, "Use C here; it is risky.")).as_bool()


def test_forbidden_words_argument_errors() -> None:
    with pytest.raises(TypeError, match=r"ForbiddenWords\(\['cat'\]\)"):
        ForbiddenWords("cat")
    with pytest.raises(ValueError, match="at least one non-empty word"):
        ForbiddenWords([])
    with pytest.raises(ValueError, match="at least one non-empty word"):
        ForbiddenWords(["ok", " "])


# -- MustNotMatch ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_must_not_match() -> None:
    check = MustNotMatch(r"\b\d{3}-\d{4}\b")
    verdicts = await feed(check, ["Call me.", "My number is 555-1234."])
    assert [v.success for v in verdicts] == ["pass", "fail"]
    assert verdicts[1].reason == r"'555-1234' matches /\b\d{3}-\d{4}\b/"
    assert not (await final(check, "It is 555-1234")).as_bool()
    assert (await final(check, "No numbers")).as_bool()
    flagged = MustNotMatch("todo", flags=re.IGNORECASE)
    assert [v.success for v in await feed(flagged, ["TODO: fix"])] == ["fail"]
    assert MustNotMatch(re.compile("x")).pattern.pattern == "x"


def test_must_not_match_errors() -> None:
    with pytest.raises(ValueError, match="not a valid regular expression"):
        MustNotMatch("(unclosed")
    with pytest.raises(ValueError, match="flags only with a pattern string"):
        MustNotMatch(re.compile("x"), flags=re.I)


# -- req() -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_req_from_a_plain_function() -> None:
    no_todo = req("No TODO markers", lambda chunk: "TODO" not in chunk)
    assert isinstance(no_todo, ChunkCheck)
    assert no_todo.format_for_llm() == "No TODO markers"
    verdicts = await feed(no_todo, ["Fine.", "TODO later."])
    assert [v.success for v in verdicts] == ["pass", "fail"]
    assert verdicts[1].reason is not None and "returned False" in verdicts[1].reason
    assert not (await final(no_todo, "Fine. TODO later.")).as_bool()


@pytest.mark.asyncio
async def test_req_from_an_async_function_with_tri_state_outcomes() -> None:
    seen: list[str] = []

    async def judge(chunk: str) -> str | PartialValidationResult | None:
        seen.append(chunk)
        await asyncio.sleep(0)
        if chunk.startswith("?"):
            return None
        if chunk.startswith("!"):
            return PartialValidationResult("fail", reason="shouting")
        return "pass"

    verdicts = await feed(req("calm", judge), ["ok", "?", "!no"])
    assert [(v.success, v.reason) for v in verdicts] == [
        ("pass", None),
        ("unknown", None),
        ("fail", "shouting"),
    ]
    assert seen == ["ok", "?", "!no"]
    # On the whole output "unknown" is no objection.
    assert (await final(req("calm", judge), "? fine")).as_bool()


@pytest.mark.asyncio
async def test_req_per_chunk_only() -> None:
    def short(chunk: str) -> bool:
        return len(chunk.split()) <= 3

    per_chunk = req("No sentence over 3 words", short, check_whole_output=False)
    running = copy.copy(per_chunk)
    for sentence in ["One two three.", "Four five six."]:
        assert (await running.stream_validate(sentence, backend=BACKEND, ctx=CTX)).success == "pass"
    ctx = output_ctx("One two three. Four five six.")
    result = await running.validate(BACKEND, ctx)
    assert result.as_bool()
    assert result.reason == "all 2 chunks passed"
    # Never streamed (validate on its own): the function judges the whole output.
    assert not (await per_chunk.validate(BACKEND, ctx)).as_bool()


@pytest.mark.asyncio
async def test_req_rejects_bad_functions_and_outcomes() -> None:
    with pytest.raises(TypeError, match="function of the chunk"):
        req("x", "not a function")  # type: ignore[arg-type]

    def answers_a_number(chunk: str) -> int:
        return 3

    with pytest.raises(TypeError, match=r"answers_a_number returned 3; return True \(pass\)"):
        await feed(req("x", answers_a_number), ["a"])  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_validate_without_an_output_in_the_context_says_what_to_pass() -> None:
    with pytest.raises(ValueError, match="no model output in the context"):
        await MaxWords(3).validate(BACKEND, SimpleContext())
    # The ready-made checks and a plain Requirement say it alike, naming the class.
    for requirement in (MaxWords(3), Requirement("short", validation_fn=lambda text: True)):
        name = type(requirement).__name__
        with pytest.raises(
            ValueError, match=rf"^{name}\.validate found no model output .* generate_from_context"
        ):
            await requirement.validate(BACKEND, SimpleContext())


def test_descriptions_tell_the_model_the_rule() -> None:
    assert MaxSentences(3).format_for_llm() == "The response must be at most 3 sentences."
    assert MaxWords(50).format_for_llm() == "The response must be at most 50 words."
    assert MaxCharacters(10).format_for_llm() == "The response must be at most 10 characters long."
    assert ForbiddenWords(["a", "b c"]).format_for_llm() == "The response must not use these words: a, b c."
    assert "'x+'" in MustNotMatch("x+").format_for_llm()
    assert repr(MaxSentences(3)) == "MaxSentences(3)"


# -- the same verdict whatever the chunking --------------------------------------------

WORDS = st.sampled_from(["alpha", "beta", "New", "york", "3.14", "e.g.", "ok", "cat"])
SEPARATORS = st.sampled_from([" ", "  ", "\n", "\n\n", ". ", "! ", "?! ", '." ', ".\n\n", "... "])


@st.composite
def texts(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.tuples(WORDS, SEPARATORS), max_size=25))
    end = draw(st.sampled_from(["", ".", " ", "\n\n"]))
    return "".join(w + s for w, s in parts) + end


def counted(requirement: Requirement, chunks: Sequence[str]) -> str | None:
    """The last streaming verdict's reason (which carries the running count)."""
    verdicts = asyncio.run(feed(requirement, chunks))
    return verdicts[-1].reason if verdicts else None


@settings(max_examples=60, deadline=None)
@given(text=texts(), chunking=st.sampled_from(["sentence", "word", "paragraph"]))
def test_streaming_counts_agree_with_the_whole_output(text: str, chunking: str) -> None:
    chunks = chunks_of(text, chunking)
    sentences, words = count_sentences(text), len(text.split())
    if chunks:
        assert counted(MaxSentences(10**6), chunks) == f"{sentences} of at most {10**6} sentences"
        assert counted(MaxWords(10**6), chunks) == f"{words} of at most {10**6} words"
    forbidden = ForbiddenWords(["new york", "cat"])
    streamed_fail = any(v.failed for v in asyncio.run(feed(forbidden, chunks)))
    whole_fail = not asyncio.run(final(forbidden, text)).as_bool()
    assert streamed_fail == whole_fail


# -- in a real run -----------------------------------------------------------------------

ANSWER = "Rivers carve valleys. They carry silt to the sea. Deltas form where they slow. That is all."


def tokens(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text) + ([text[len(text.rstrip()) :]] if text != text.rstrip() else [])


@pytest.mark.asyncio
@pytest.mark.parametrize("chunking", ["sentence", "word"])
async def test_max_sentences_stops_a_run_mid_stream(chunking: str) -> None:
    backend = ScriptedBackend(tokens(ANSWER), delay=0.02)
    result = await stream_with_chunking(
        Instruction("Explain rivers."),
        backend,
        SimpleContext(),
        requirements=[MaxSentences(2), ForbiddenWords(["ocean"])],
        chunking=chunking,
    )
    events = [e async for e in result.events()]
    await result.acomplete()
    assert not result.completed
    assert result.full_text.endswith("They carry silt to the sea.")
    [(failed, verdict)] = result.streaming_failures
    assert isinstance(failed, MaxSentences)
    assert verdict.reason == "3 sentences so far, more than the limit of 2"
    assert isinstance(events[-2], QuickCheckEvent) and not events[-2].passed
    assert isinstance(events[-1], CompletedEvent) and not events[-1].success
    assert not any(isinstance(e, StreamingDoneEvent | FullValidationEvent) for e in events)
    generation = backend.generations[-1]
    assert generation.cancelled
    assert generation.deltas_sent < len(backend.deltas)


@pytest.mark.asyncio
async def test_passing_checks_run_to_the_final_validation() -> None:
    result = await stream_with_chunking(
        Instruction("Explain rivers."),
        ScriptedBackend(tokens(ANSWER)),
        SimpleContext(),
        requirements=[
            MaxSentences(4),
            MaxWords(20),
            MustNotMatch(r"\d"),
            req("calm", lambda c: "!" not in c),
        ],
    )
    await result.acomplete()
    assert result.completed
    assert result.full_text == ANSWER
    assert [r.as_bool() for r in result.final_validations] == [True, True, True, True]
    assert result.final_validations[0].reason == "4 sentences, within the limit of 4"


# -- one validate, a check_text hook, and short labels -------------------------------------


def test_every_ready_made_check_has_the_one_validate() -> None:
    for cls in (MaxSentences, MaxWords, MaxCharacters, ForbiddenWords, MustNotMatch, ChunkCheck):
        assert issubclass(cls, TextCheck)
        assert cls.validate is TextCheck.validate, cls


@pytest.mark.asyncio
async def test_a_check_of_your_own_implements_check_text_only() -> None:
    class NoExclamation(TextCheck):
        async def check_text(self, text: str) -> ValidationResult:
            return ValidationResult("!" not in text, reason=f"{text.count('!')} exclamation marks")

    assert not await final(NoExclamation("calm"), "Wow! Great!")
    assert (await final(NoExclamation("calm"), "Wow! Great!")).reason == "2 exclamation marks"
    assert await final(NoExclamation("calm"), "Fine.")
    with pytest.raises(ValueError, match="no model output in the context"):
        await NoExclamation("calm").validate(BACKEND, SimpleContext())


def test_labels_are_short_names_for_a_line_of_output() -> None:
    assert MaxSentences(3).label == "max 3 sentences"
    assert MaxWords(1).label == "max 1 word"
    assert MaxCharacters(280).label == "max 280 characters"
    assert ForbiddenWords(["cat", "new york"]).label == "forbidden: cat, new york"
    assert MustNotMatch(r"\d+").label == r"must not match /\d+/"
    assert req("No TODO markers", lambda chunk: True).label == "No TODO markers"
    assert Requirement("Be concise.").label == "Be concise."
    assert Requirement().label == "Requirement"
