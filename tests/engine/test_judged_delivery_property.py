"""The core promise, property-tested: no text is delivered before every requirement judged it.

Whatever the stream's chunking, each requirement's own chunking, the slicing of the deltas,
the checks' verdicts (answering at once or after a loop turn) and retries:

* every ``ChunkEvent`` comes after every requirement judged ("pass" or "unknown") each
  character of it;
* ``CompletedEvent(success=True)``: every piece of ``full_text``, cut afresh with each
  requirement's own chunking, was judged "pass" or "unknown" by it, every chunk delivered
  was judged by the requirements that check the stream's chunks, and every requirement's
  final ``validate()`` judged ``full_text``;
* a run where no check ever fails succeeds.

The test does not look inside validate: recording requirements write each piece
they judged to a timeline, and a subscriber writes each event there as it is emitted.
Every letter of every text is unique across the run (its attempts included), so a
letter names one position of the output: "judged before delivery" is checked letter by
letter, and a piece is found by its text.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from backends import ScriptedBackend
from engine import (
    ChunkEvent,
    CompletedEvent,
    FullValidationEvent,
    Instruction,
    PartialValidationResult,
    Requirement,
    SimpleContext,
    StreamEvent,
    StreamRetry,
    ValidationResult,
    stream_with_chunking,
)
from operators import Chunker, ChunkingStrategy, resolve_chunking_strategy
from operators.chunking import RawDeltas
from operators.testing import check_chunking_strategy

_FIRST_LETTER = 0x4E00  # CJK ideographs: letters to the chunkers, and plenty of them


def _is_letter(char: str) -> bool:
    return ord(char) >= _FIRST_LETTER


def letters(text: str) -> set[str]:
    return {c for c in text if _is_letter(c)}


class PairsOfWords(ChunkingStrategy):
    """A custom chunking: two whitespace-separated words per chunk (restartable at chunk ends)."""

    def split(self, accumulated_text: str) -> list[str]:
        words = list(re.finditer(r"\S+", accumulated_text))
        if words and words[-1].end() == len(accumulated_text):
            words.pop()  # not followed by whitespace yet
        return [accumulated_text[words[i].start() : words[i + 1].end()] for i in range(0, len(words) - 1, 2)]

    def flush(self, accumulated_text: str) -> list[str]:
        words = list(re.finditer(r"\S+", accumulated_text))
        done = 2 * len(self.split(accumulated_text))
        rest = words[done:]
        return [accumulated_text[rest[0].start() : rest[-1].end()]] if rest else []


def test_the_custom_chunking_of_this_test_obeys_the_chunking_laws() -> None:
    check_chunking_strategy(PairsOfWords(), max_examples=30)


# -- what a run is made of ------------------------------------------------------------------

SEPARATORS = [" ", "  ", "\n", "\n\n", " \n\n ", "\t"]
ENDERS = ["", "", "", ".", "!", "?"]
CHUNKINGS: list[Any] = ["sentence", "word", "paragraph", PairsOfWords()]


@st.composite
def script(draw: st.DrawFn) -> list[tuple[int, str, str]]:
    """Tokens as (letters, ender, separator after); letters are numbered later."""
    tokens = draw(
        st.lists(
            st.tuples(st.integers(1, 3), st.sampled_from(ENDERS), st.sampled_from(SEPARATORS)),
            min_size=1,
            max_size=14,
        )
    )
    if draw(st.booleans()):  # the text ends without whitespace: the last word is withheld
        n, ender, _ = tokens[-1]
        tokens[-1] = (n, ender, "")
    lead = draw(st.sampled_from(["", "", " ", "\n\n"]))
    return [(0, lead, ""), *tokens] if lead else tokens


def render(tokens: list[tuple[int, str, str]], counter: list[int]) -> str:
    out = []
    for n, ender, sep in tokens:
        word = "".join(chr(_FIRST_LETTER + counter[0] + i) for i in range(n))
        counter[0] += n
        out.append(word + ender + sep)
    return "".join(out)


@st.composite
def sliced(draw: st.DrawFn, text: str) -> list[str]:
    if len(text) < 2:
        return [text]
    cuts = sorted(draw(st.sets(st.integers(1, len(text) - 1), max_size=len(text) - 1)))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


class Recorder(Requirement):
    """Judges by letters: "fail" on a poisoned one, "unknown" on a doubtful one, else "pass".
    Writes every piece it judged, and the text its final validate() saw, to the timeline."""

    def __init__(
        self,
        name: str,
        chunking: Any,
        poison: set[str],
        doubt: set[str],
        suspends: bool,
        timeline: list[tuple[Any, ...]],
    ) -> None:
        super().__init__(name, chunking=chunking)
        self.name = name
        self.poison = poison
        self.doubt = doubt
        self.suspends = suspends
        self.timeline = timeline

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        if self.suspends:
            await asyncio.sleep(0)
        seen = letters(chunk)
        outcome = "fail" if seen & self.poison else "unknown" if seen & self.doubt else "pass"
        self.timeline.append(("judged", self.name, str(chunk), outcome))
        return PartialValidationResult(outcome, reason=f"{self.name} says {outcome}")  # type: ignore[arg-type]

    async def validate(self, backend: Any, ctx: Any, **kwargs: Any) -> ValidationResult:
        text = await self._output_text(ctx)
        self.timeline.append(("final", self.name, text))
        return ValidationResult(True)


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    counter = [0]
    text = render(draw(script()), counter)
    continuations = [render(draw(script()), counter) for _ in range(2)]
    all_letters = [chr(_FIRST_LETTER + i) for i in range(counter[0])]
    never_fails = draw(st.booleans())
    specs = []
    for _ in range(draw(st.integers(1, 3))):
        specs.append(
            {
                "chunking": draw(st.sampled_from([None, None, *CHUNKINGS])),
                "poison": set() if never_fails else draw(st.sets(st.sampled_from(all_letters), max_size=2)),
                "doubt": draw(st.sets(st.sampled_from(all_letters), max_size=3)),
                "suspends": draw(st.booleans()),
            }
        )
    return {
        "deltas": draw(sliced(text)),
        "continuations": [draw(sliced(c)) for c in continuations],
        "stream_chunking": draw(st.sampled_from([*CHUNKINGS, RawDeltas()])),
        "retry": draw(st.sampled_from([None, 2, 3])),
        "specs": specs,
    }


async def run_scenario(scenario: dict[str, Any]) -> tuple[list[tuple[Any, ...]], list[Recorder]]:
    timeline: list[tuple[Any, ...]] = []
    reqs = [
        Recorder(f"r{i}", spec["chunking"], spec["poison"], spec["doubt"], spec["suspends"], timeline)
        for i, spec in enumerate(scenario["specs"])
    ]
    retry = None if scenario["retry"] is None else StreamRetry(max_attempts=scenario["retry"])
    backend = ScriptedBackend(scenario["deltas"], continuations=scenario["continuations"])
    result = await stream_with_chunking(
        Instruction("Write."),
        backend,
        SimpleContext(),
        requirements=reqs,
        chunking=scenario["stream_chunking"],
        retry=retry,
    )
    # Synchronous: each event is on the timeline at the moment it is emitted.
    result.observable.subscribe(on_next=lambda event: timeline.append(("event", event)))
    await asyncio.wait_for(result.acomplete(), 10)
    return timeline, reqs


def check_invariant(scenario: dict[str, Any], timeline: list[tuple[Any, ...]], reqs: list[Recorder]) -> None:
    events: list[StreamEvent] = [entry[1] for entry in timeline if entry[0] == "event"]
    assert sum(isinstance(e, CompletedEvent) for e in events) == 1 and isinstance(events[-1], CompletedEvent)
    completed = events[-1]

    # Every letter of a delivered chunk was judged (not failed) by every requirement before.
    cleared: dict[str, set[str]] = {r.name: set() for r in reqs}
    judged: dict[str, dict[str, str]] = {r.name: {} for r in reqs}
    for entry in timeline:
        if entry[0] == "judged":
            _, name, piece, outcome = entry
            judged[name][piece] = outcome
            if outcome != "fail":
                cleared[name] |= letters(piece)
        elif entry[0] == "event" and isinstance(entry[1], ChunkEvent):
            for r in reqs:
                unjudged = letters(entry[1].text) - cleared[r.name]
                assert not unjudged, f"{r.name} had not judged {sorted(unjudged)} of {entry[1].text!r}"

    if not completed.success:
        assert any(e[0] == "judged" and e[3] == "fail" for e in timeline), "failed with no failing check"
        return

    full = completed.full_text
    delivered = [e.text for e in events if isinstance(e, ChunkEvent)]
    assert letters(full) == letters("".join(delivered)), "success with text never delivered as a chunk"
    for r in reqs:
        if r.chunking is None:
            pieces = delivered
        else:
            chunker = Chunker(resolve_chunking_strategy(r.chunking))
            pieces = [c.text for c in chunker.feed(full) + chunker.flush()]
        for piece in pieces:
            if letters(piece):
                assert judged[r.name].get(piece) in ("pass", "unknown"), (
                    f"success, but {r.name} never judged its piece {piece!r} of {full!r}"
                )
        assert ("final", r.name, full) in timeline, f"{r.name}'s final validate() did not judge full_text"
    (final,) = [e for e in events if isinstance(e, FullValidationEvent)]
    assert len(final.results) == len(reqs)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenario=scenarios())
# Runs it found: a paragraph check whose paragraph the stop cut off, with the chunks
# before the failing one waiting on it (they are withheld with it, not left waiting).
@example(
    scenario={
        "deltas": ["一丁丂. ", " 七 丄. 丅. "],
        "continuations": [["丆万", "丈 三 上 下"], ["丌不", "与 丏 丐"]],
        "stream_chunking": PairsOfWords(),
        "retry": 3,
        "specs": [
            {"chunking": None, "poison": {"上", "一"}, "doubt": {"一"}, "suspends": False},
            {"chunking": "paragraph", "poison": set(), "doubt": {"一"}, "suspends": False},
            {"chunking": None, "poison": set(), "doubt": {"万"}, "suspends": True},
        ],
    }
)
@example(
    scenario={
        "deltas": [" ", "一", "丁", "."],
        "continuations": [["丂 "], ["七 "]],
        "stream_chunking": RawDeltas(),
        "retry": None,
        "specs": [
            {"chunking": None, "poison": {"丁", "一"}, "doubt": set(), "suspends": False},
            {"chunking": "paragraph", "poison": set(), "doubt": set(), "suspends": False},
            {"chunking": None, "poison": set(), "doubt": set(), "suspends": False},
        ],
    }
)
def test_no_text_is_delivered_before_every_requirement_judged_it(scenario: dict[str, Any]) -> None:
    timeline, reqs = asyncio.run(run_scenario(scenario))
    check_invariant(scenario, timeline, reqs)
    if not any(spec["poison"] for spec in scenario["specs"]):
        completed = [e[1] for e in timeline if e[0] == "event" and isinstance(e[1], CompletedEvent)]
        assert completed[0].success, "no check ever fails, yet the run failed"
