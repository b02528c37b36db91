"""Every code block of seeds 000 ("Async and Streaming") and 001 (the streaming tutorial),
verbatim but for its imports, run against ScriptedBackend and against a loopback
Ollama-protocol server (``tests/fake_servers.py``) through the real ``OllamaBackend``.

Each block is executed as written (``asyncio.run(...)`` included) after its import
lines are rewritten (``IMPORTS``). ``import mellea`` becomes ``import seed_mellea as
mellea``: for the scripted runs ``seed_mellea.start_session`` is the real
``start_session`` bound to a routing scripted backend; for the Ollama runs it is the
``engine`` package itself, with ``OLLAMA_HOST`` pointing at the fake server, so the
seeds' ``start_session()`` with no arguments is the real default path. The one
fragment that is not a program (000-6, top-level ``await``) is wrapped in a coroutine
that sets up the ``action``, ``m`` and ``req`` it refers to.

Decisions pinned here (as Mellea 0.7 and 0.8 behave; seed 001 says so): ``ainstruct``
with the default strategy returns a *computed* thunk, so seed 000's first example prints
the answer, its three "parallel" poems are generated one after the other (and
``is_computed()`` prints True, not the ``# False`` of the comment), and its streaming loop
finds the thunk computed before it starts (it prints only the newline). With
``strategy=None`` (seed 001 step 2; the companion tests below add it to seed 000's blocks)
the thunk is lazy: the comment's ``False`` holds and the generations run in parallel.
``achat`` returns the assistant ``Message``, printed as Mellea prints one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import re
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import engine
from backends.scripted import ScriptedBackend
from engine.core.components import Message
from engine.core.context import Context
from engine.core.generation import GenerationInfo
from engine.core.thunk import ModelOutputThunk
from engine.session import CHAT_CONTEXT_WARNING
from engine.session_start import start_session
from tests.fake_servers import FakeOllamaServer, Reply

SEEDS: dict[str, str] = {
    "000-0": """\
# Requires: mellea
# Returns: None
import asyncio
import mellea

async def main():
    m = mellea.start_session()
    result = await m.ainstruct("Write a haiku about concurrency.")
    print(str(result))
    # Output will vary — LLM responses depend on model and temperature.

asyncio.run(main())
""",
    "000-1": """\
# Requires: mellea
# Returns: None
import asyncio
import mellea

async def main():
    m = mellea.start_session()

    # Fire off all three — generation starts for each immediately
    thunk_a = await m.ainstruct("Write a poem about mountains.")
    thunk_b = await m.ainstruct("Write a poem about rivers.")
    thunk_c = await m.ainstruct("Write a poem about forests.")

    # None are resolved yet
    print(thunk_a.is_computed())  # False

    # Resolve all in parallel
    await asyncio.gather(
        thunk_a.avalue(),
        thunk_b.avalue(),
        thunk_c.avalue(),
    )

    print(thunk_a.value)
    print(thunk_b.value)
    print(thunk_c.value)
    # Output will vary — LLM responses depend on model and temperature.

asyncio.run(main())
""",
    "000-2": """\
# Requires: mellea
# Returns: None
import asyncio
import mellea
from mellea.helpers.async_helpers import wait_for_all_mots

async def main():
    m = mellea.start_session()

    thunks = []
    for topic in ["mountains", "rivers", "forests"]:
        thunks.append(await m.ainstruct(f"Write a short poem about {topic}."))

    await wait_for_all_mots(thunks)

    for t in thunks:
        print(t.value)
    # Output will vary — LLM responses depend on model and temperature.

asyncio.run(main())
""",
    "000-3": """\
# Requires: mellea
# Returns: None
import asyncio
import mellea
from mellea.backends import ModelOption

async def main():
    m = mellea.start_session()
    mot = await m.ainstruct(
        "Write a short story about a robot learning to cook.",
        model_options={ModelOption.STREAM: True},
    )

    # Consume chunks as they arrive
    while not mot.is_computed():
        chunk = await mot.astream()
        print(chunk, end="", flush=True)

    print()  # newline after streaming completes

asyncio.run(main())
# Output will vary — LLM responses depend on model and temperature.
""",
    "000-4": """\
# Requires: mellea
# Returns: None
import asyncio
import mellea
from mellea.stdlib.context import ChatContext

async def sequential_chat():
    m = mellea.start_session(ctx=ChatContext())
    r1 = await m.achat("Hello.")
    r2 = await m.achat("Tell me more.")  # safe — r1 is fully resolved
    print(str(r2))
    # Output will vary — LLM responses depend on model and temperature.

asyncio.run(sequential_chat())
""",
    "000-5": '''\
# Requires: mellea
# Returns: None
import asyncio

from mellea.core.backend import Backend
from mellea.core.base import Context
from mellea.core.requirement import PartialValidationResult, Requirement, ValidationResult
from mellea.stdlib.components import Instruction
from mellea.stdlib.streaming import (
    ChunkEvent,
    CompletedEvent,
    FullValidationEvent,
    QuickCheckEvent,
    StreamingDoneEvent,
    stream_with_chunking,
)


class MaxSentencesReq(Requirement):
    """Fails if the model generates more than *limit* sentences."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._limit = limit
        self._count = 0

    def format_for_llm(self) -> str:
        return f"The response must be at most {self._limit} sentences."

    async def stream_validate(
        self, chunk: str, *, backend: Backend, ctx: Context
    ) -> PartialValidationResult:
        self._count += 1
        if self._count > self._limit:
            return PartialValidationResult("fail", reason="Too many sentences")
        return PartialValidationResult("unknown")

    async def validate(
        self, backend: Backend, ctx: Context, *, format=None, model_options=None
    ) -> ValidationResult:
        return ValidationResult(result=True)


async def main() -> None:
    from mellea.stdlib.session import start_session

    m = start_session()
    action = Instruction("Write a two-sentence summary of the water cycle.")
    req = MaxSentencesReq(limit=3)

    result = await stream_with_chunking(
        action, m.backend, m.ctx, requirements=[req], chunking="sentence"
    )

    async for event in result.events():
        match event:
            case ChunkEvent():
                print(f"  chunk[{event.chunk_index}]: {event.text!r}")
            case QuickCheckEvent(passed=False):
                print(f"  FAIL at chunk {event.chunk_index}: {event.results}")
            case StreamingDoneEvent():
                print(f"  stream done — {len(event.full_text)} chars")
            case FullValidationEvent():
                print(f"  final: {'pass' if event.passed else 'fail'}")
            case CompletedEvent():
                print(f"  completed — success={event.success}")
            case _:
                pass  # ErrorEvent and other future types

    await result.acomplete()
    print(f"completed={result.completed}, failures={len(result.streaming_failures)}")


asyncio.run(main())
''',
    "000-6": """\
result = await stream_with_chunking(
    action, m.backend, m.ctx, requirements=[req], chunking="sentence"
)
async for chunk in result.astream():
    print(chunk)
await result.acomplete()
""",
    "001-0": """\
# Requires: mellea
# Returns: str
import asyncio
import mellea

async def main():
    m = mellea.start_session()
    result = await m.ainstruct(
        "Summarise this customer feedback in one sentence: "
        "The onboarding was confusing and took far too long. "
        "Support was helpful once I got through."
    )
    print(str(result))

asyncio.run(main())
""",
    "001-1": """\
# Requires: mellea
# Returns: str
import asyncio
import mellea
from mellea.backends import ModelOption

async def stream_summary(feedback: str) -> str:
    m = mellea.start_session()
    mot = await m.ainstruct(
        "Summarise this customer feedback in one sentence: {{text}}",
        user_variables={"text": feedback},
        model_options={ModelOption.STREAM: True},
        strategy=None,
    )

    chunks = []
    while not mot.is_computed():
        chunk = await mot.astream()
        print(chunk, end="", flush=True)
        chunks.append(chunk)
    print()  # newline after streaming completes

    return "".join(chunks)

asyncio.run(stream_summary(
    "The onboarding was confusing and took far too long. "
    "Support was helpful once I got through."
))
""",
    "001-2": """\
# Requires: mellea
# Returns: list[str]
import asyncio
import mellea
from mellea.helpers.async_helpers import wait_for_all_mots

FEEDBACK_BATCH = [
    "The onboarding was confusing and took far too long. Support was helpful once I got through.",
    "Product works great but the mobile app crashes frequently. No response from support.",
    "Fast delivery, exactly as described. Will order again.",
    "Billing charged me twice. Still waiting for a refund after two weeks.",
]

async def summarise_batch(items: list[str]) -> list[str]:
    m = mellea.start_session()

    # Fire all summarisation calls immediately — none waits for the others.
    thunks = []
    for item in items:
        thunk = await m.ainstruct(
            "Summarise this customer feedback in one sentence: {{text}}",
            user_variables={"text": item},
        )
        thunks.append(thunk)

    # None are resolved yet — all are generating in parallel.
    await wait_for_all_mots(thunks)

    # All thunks are now resolved.
    return [t.value for t in thunks]

summaries = asyncio.run(summarise_batch(FEEDBACK_BATCH))
for summary in summaries:
    print(summary)
""",
    "001-3": '''\
# Requires: mellea
# Returns: None
import asyncio
from typing import Literal

import mellea
from mellea import generative
from mellea.helpers.async_helpers import wait_for_all_mots


@generative
def classify_sentiment(summary: str) -> Literal["positive", "negative", "mixed"]:
    """Classify the overall sentiment of the customer feedback summary."""


async def analyze_feedback(feedback: str) -> None:
    m = mellea.start_session()

    # Fire summarise and extract_issues in parallel — both take raw feedback.
    summary_thunk = await m.ainstruct(
        "Summarise this customer feedback in one sentence: {{text}}",
        user_variables={"text": feedback},
    )
    issues_thunk = await m.ainstruct(
        "Extract JSON with main_complaint, positive_aspect, and urgency from: {{text}}",
        user_variables={"text": feedback},
    )

    await wait_for_all_mots([summary_thunk, issues_thunk])

    summary = summary_thunk.value

    # classify_sentiment depends on the resolved summary — run it after.
    sentiment = classify_sentiment(m, summary=summary)

    print(f"Summary:   {summary}")
    print(f"Sentiment: {str(sentiment)}")
    print(f"Issues:    {issues_thunk.value}")


asyncio.run(analyze_feedback(
    "The onboarding was confusing and took far too long. "
    "Support was helpful once I got through."
))
''',
    "001-4": """\
# Requires: mellea
# Returns: None
import asyncio
import mellea
from mellea.stdlib.context import ChatContext

async def sequential_chat():
    m = mellea.start_session(ctx=ChatContext())
    r1 = await m.achat("Hello.")
    r2 = await m.achat("Tell me more.")  # safe — r1 is fully resolved
    print(str(r2))

asyncio.run(sequential_chat())
""",
}

# The only change to a block: where its imports come from.
IMPORTS = {
    "import mellea": "import seed_mellea as mellea",
    "from mellea import generative": "from engine import generative",
    "from mellea.helpers.async_helpers import wait_for_all_mots": "from engine import wait_for_all_mots",
    "from mellea.backends import ModelOption": "from engine import ModelOption",
    "from mellea.stdlib.context import ChatContext": "from engine import ChatContext",
    "from mellea.core.backend import Backend": "from engine import Backend",
    "from mellea.core.base import Context": "from engine import Context",
    "from mellea.core.requirement import": "from engine import",
    "from mellea.stdlib.components import Instruction": "from engine import Instruction",
    "from mellea.stdlib.streaming import (": "from engine import (",
    "from mellea.stdlib.session import start_session": "from seed_mellea import start_session",
}


def rewrite_imports(code: str) -> str:
    """*code* with each import line that names mellea pointed at our modules; nothing else changes."""
    out = []
    for line in code.splitlines():
        stripped = line.strip()
        for old, new in IMPORTS.items():
            if (
                stripped == old
                or stripped.startswith(old + " ")
                or (old.endswith(("import", "(")) and stripped.startswith(old))
            ):
                line = line.replace(old, new)
                break
        out.append(line)
    return "\n".join(out) + "\n"


def test_the_blocks_are_the_seeds_verbatim_and_all_of_them() -> None:
    seeds_dir = Path(__file__).resolve().parents[3] / "shared" / "seeds"
    files = sorted(seeds_dir.glob("00[01]_*.txt"))
    if len(files) != 2:
        pytest.skip("the seeds are not beside this checkout")
    found = {}
    for path in files:
        blocks = re.findall(r"```python[^\n]*\n(.*?)```", path.read_text(), re.S)
        found.update({f"{path.name[:3]}-{i}": block for i, block in enumerate(blocks)})
    assert found == SEEDS


def test_rewrite_changes_only_import_lines() -> None:
    for key, code in SEEDS.items():
        before, after = code.splitlines(), rewrite_imports(code).splitlines()
        assert len(before) == len(after)
        changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
        assert all("import" in a and "mellea" in a for a, _ in changed), key
        assert "mellea." not in rewrite_imports(code).replace("mellea.start_session", ""), key


# -- what the model says --------------------------------------------------------------------

FEEDBACK = [
    "The onboarding was confusing and took far too long. Support was helpful once I got through.",
    "Product works great but the mobile app crashes frequently. No response from support.",
    "Fast delivery, exactly as described. Will order again.",
    "Billing charged me twice. Still waiting for a refund after two weeks.",
]
SUMMARIES = [
    "Onboarding was slow and confusing, but support helped.",
    "The product is good, the mobile app crashes and support is silent.",
    "Delivery was fast and accurate; the customer will reorder.",
    "The customer was billed twice and still awaits a refund.",
]
ISSUES = (
    '{"main_complaint": "confusing onboarding", "positive_aspect": "helpful support", "urgency": "medium"}'
)
POEMS = {
    "mountains": "Stone shoulders hold the sky, snow keeps their quiet.",
    "rivers": "Water remembers every stone it has ever turned.",
    "forests": "Green cathedral, roots for pillars, wind for hymns.",
}
STORY = "Unit 7 burned the toast twice. On the third try it learned patience, and breakfast was perfect."
HAIKU = "Threads wait in line, locks turn, the loop hums along."
WATER = "Water evaporates from the sea. It falls again as rain."
CHAT = {
    "Hello.": "Hi! How can I help you today?",
    "Tell me more.": "Of course! Ask me about anything you like.",
}

DELAY = 0.02
"""Seconds between deltas (scripted) or frames (fake server)."""


def route(prompt: str) -> tuple[str, str]:
    """(route name, answer) for the text of the newest turn of a request."""
    if prompt.startswith("Extract JSON"):
        return "issues", ISSUES
    if prompt.startswith("Classify the overall sentiment"):
        return "sentiment", "mixed"
    if prompt.startswith("Summarise this customer feedback"):
        for i, feedback in enumerate(FEEDBACK):
            if feedback in prompt:
                return f"summary{i}", SUMMARIES[i]
        return "summary-other", "A summary."
    for topic, poem in POEMS.items():
        if f"about {topic}" in prompt:
            return topic, poem
    if "haiku" in prompt:
        return "haiku", HAIKU
    if "robot learning to cook" in prompt:
        return "story", STORY
    if "water cycle" in prompt:
        return "water", WATER
    if prompt in CHAT:
        return "chat", CHAT[prompt]
    raise AssertionError(f"the seed sent a prompt this test does not expect: {prompt!r}")


def words(text: str) -> list[str]:
    """*text* as deltas of one word (with its trailing space) each."""
    return re.findall(r"\S+\s*", text)


# -- the two harnesses ------------------------------------------------------------------------


class RoutedBackend:
    """A real Backend made of ScriptedBackends: each request is answered by the script its prompt selects."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, list[str], GenerationInfo]] = []
        """(route, prompt, history texts, generation record) per request, in the order made."""

    async def generate_from_context(
        self,
        action: Any,
        ctx: Context,
        *,
        format: type | None = None,
        model_options: dict[str, Any] | None = None,
    ) -> tuple[ModelOutputThunk[str], Context]:
        prompt = action.format_for_llm()
        name, answer = route(prompt)
        script = ScriptedBackend(words(answer), delay=DELAY)
        thunk, new_ctx = await script.generate_from_context(
            action, ctx, format=format, model_options=model_options
        )
        history = [t.content if isinstance(t, Message) else str(t) for t in ctx.view_for_generation()]
        self.requests.append((name, prompt, history, script.generations[0]))
        return thunk, new_ctx


class RoutedOllamaServer(FakeOllamaServer):
    """The fake Ollama server, answering each request with the reply its newest message selects."""

    def __init__(self) -> None:
        super().__init__()
        self.routes: dict[Any, str] = {}

    async def _serve(self, request: Any, record: Any, reply: Reply, body: dict[str, Any]) -> Any:
        name, answer = route(body["messages"][-1]["content"])
        self.routes[record] = name
        # Non-streaming answers arrive whole, after as long as the stream would take.
        return await super()._serve(
            request,
            record,
            Reply(deltas=words(answer), delay=DELAY, headers_delay=0.0 if body.get("stream") else DELAY * 8),
            body,
        )


class Harness:
    """Runs seed blocks against one kind of backend and reports what the model was asked."""

    kind = ""

    def run(self, key: str, capsys: pytest.CaptureFixture[str]) -> tuple[str, dict[str, Any]]:
        """Execute block *key*; return what it printed and its module namespace."""
        namespace: dict[str, Any] = {"__name__": f"seed_{key.replace('-', '_')}"}
        code = rewrite_imports(SEEDS[key])
        exec(compile(code, f"seed {key}", "exec"), namespace)
        return capsys.readouterr().out, namespace

    def requests(self) -> list[tuple[str, str, list[str], float, float | None]]:
        """(route, prompt, history, started, finished) per request, in order."""
        raise NotImplementedError

    def by_route(self, name: str) -> list[tuple[str, str, list[str], float, float | None]]:
        return [r for r in self.requests() if r[0] == name]


class ScriptedHarness(Harness):
    kind = "scripted"

    def __init__(self) -> None:
        self.backend = RoutedBackend()
        module = types.ModuleType("seed_mellea")
        module.start_session = functools.partial(start_session, self.backend)  # type: ignore[attr-defined]
        self.module = module

    def requests(self) -> list[tuple[str, str, list[str], float, float | None]]:
        return [(n, p, h, g.started_at, g.finished_at) for n, p, h, g in self.backend.requests]


class OllamaHarness(Harness):
    kind = "ollama"

    def __init__(self) -> None:
        self.module = engine
        self.server = RoutedOllamaServer()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-ollama", daemon=True)

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def requests(self) -> list[tuple[str, str, list[str], float, float | None]]:
        out = []
        for record in list(self.server.requests):
            messages = record.body["messages"]
            history = [m["content"] for m in messages[:-1]]
            out.append(
                (
                    self.server.routes[record],
                    messages[-1]["content"],
                    history,
                    record.received_at,
                    record.completed_at,
                )
            )
        return out


@pytest.fixture(params=["scripted", "ollama"])
def harness(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    h: ScriptedHarness | OllamaHarness = ScriptedHarness() if request.param == "scripted" else OllamaHarness()
    if isinstance(h, OllamaHarness):
        h.start()
        monkeypatch.setenv("OLLAMA_HOST", h.server.url)
    monkeypatch.setitem(sys.modules, "seed_mellea", h.module)
    try:
        yield h
    finally:
        if isinstance(h, OllamaHarness):
            h.stop()


# -- seed 000: Async and Streaming -------------------------------------------------------------


def sequential(spans: list[tuple[float, float | None]]) -> bool:
    """Whether each request started after the one before it had finished."""
    return all(
        end is not None and end <= next_start for (_, end), (next_start, _) in itertools.pairwise(spans)
    )


def with_strategy_none(code: str) -> str:
    """*code* with ``strategy=None`` added to every ``m.ainstruct(...)`` call on one line."""
    return re.sub(r"(await m\.ainstruct\(.*)\)$", r"\1, strategy=None)", code, flags=re.M)


@pytest.mark.parametrize(("key", "answer"), [("000-0", HAIKU), ("001-0", SUMMARIES[0])])
def test_print_str_right_after_ainstruct_prints_the_answer(
    harness: Harness, key: str, answer: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = harness.run(key, capsys)
    # The default strategy returns a computed thunk: str() is the whole answer.
    assert out == answer + "\n"
    ((_, _, _, _started, finished),) = harness.requests()
    assert finished is not None


def test_parallel_generation_example_runs_one_after_the_other(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = harness.run("000-1", capsys)
    # Computed by default: `print(thunk_a.is_computed())  # False` prints True, as in Mellea.
    assert out.splitlines() == ["True", POEMS["mountains"], POEMS["rivers"], POEMS["forests"]]
    spans = [(r[3], r[4]) for r in harness.requests()]
    assert len(spans) == 3 and sequential(spans)


def test_parallel_generation_with_strategy_none(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    code = with_strategy_none(rewrite_imports(SEEDS["000-1"]))
    assert code.count("strategy=None") == 3
    started = time.perf_counter()
    exec(compile(code, "seed 000-1 with strategy=None", "exec"), {"__name__": "seed_000_1_lazy"})
    elapsed = time.perf_counter() - started
    out = capsys.readouterr().out
    assert out.splitlines() == ["False", POEMS["mountains"], POEMS["rivers"], POEMS["forests"]]
    spans = [(r[3], r[4]) for r in harness.requests()]
    assert len(spans) == 3 and all(end is not None for _, end in spans)
    # All three were generating at once: every one started before any finished.
    assert max(start for start, _ in spans) < min(end for _, end in spans if end is not None)
    # Sanity bound: near the slowest generation, well below the three one after another.
    durations = [end - start for start, end in spans if end is not None]
    assert elapsed < 0.8 * sum(durations)


def test_wait_for_all_mots(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = harness.run("000-2", capsys)
    assert out.splitlines() == [POEMS["mountains"], POEMS["rivers"], POEMS["forests"]]
    assert [r[1] for r in harness.requests()] == [
        f"Write a short poem about {t}." for t in ("mountains", "rivers", "forests")
    ]


def test_streaming_print_loop_finds_a_computed_thunk(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = harness.run("000-3", capsys)
    # Without strategy=None the thunk is computed before the loop: it prints only the newline
    # (seed 001: "without it, ainstruct() returns a pre-computed thunk").
    assert out == "\n"
    assert len(harness.requests()) == 1


def test_streaming_print_loop_with_strategy_none_prints_the_text_exactly_once(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    code = rewrite_imports(SEEDS["000-3"]).replace(
        "model_options={ModelOption.STREAM: True},",
        "model_options={ModelOption.STREAM: True}, strategy=None,",
    )
    assert "strategy=None" in code
    exec(compile(code, "seed 000-3 with strategy=None", "exec"), {"__name__": "seed_000_3_lazy"})
    assert capsys.readouterr().out == STORY + "\n"


@pytest.mark.parametrize("key", ["000-4", "001-4"])
def test_sequential_chat_with_chat_context(
    harness: Harness, key: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    out, _ = harness.run(key, capsys)
    # achat returns the assistant Message; print(str(r2)) shows it as Mellea does.
    assert out == f'Message(role="assistant", content="{CHAT["Tell me more."]}")\n'
    first, second = harness.requests()
    assert (first[1], first[2]) == ("Hello.", [])
    # The second turn was sent with the first exchange: r1 was fully resolved.
    assert (second[1], second[2]) == ("Tell me more.", ["Hello.", CHAT["Hello."]])
    warnings = [r for r in caplog.records if r.getMessage() == CHAT_CONTEXT_WARNING]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"


def test_stream_with_chunking_events_example(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = harness.run("000-5", capsys)
    assert out.splitlines() == [
        "  chunk[0]: 'Water evaporates from the sea.'",
        "  chunk[1]: 'It falls again as rain.'",
        f"  stream done — {len(WATER)} chars",
        "  final: pass",
        "  completed — success=True",
        "completed=True, failures=0",
    ]


FRAGMENT_SETUP = """\
import asyncio
from engine import Instruction, Requirement, stream_with_chunking
import seed_mellea as mellea


async def fragment():
    m = mellea.start_session()
    action = Instruction("Write a two-sentence summary of the water cycle.")
    req = Requirement("at most three sentences", validation_fn=lambda text: True)
{body}

asyncio.run(fragment())
"""


def test_stream_with_chunking_astream_fragment(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    body = "\n".join("    " + line if line else line for line in SEEDS["000-6"].splitlines())
    code = FRAGMENT_SETUP.format(body=body)
    exec(compile(code, "seed 000-6", "exec"), {"__name__": "seed_000_6"})
    assert capsys.readouterr().out.splitlines() == [
        "Water evaporates from the sea.",
        "It falls again as rain.",
    ]


# -- seed 001: the tutorial -------------------------------------------------------------------------


def test_tutorial_step2_streaming_with_user_variables(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = harness.run("001-1", capsys)
    assert out == SUMMARIES[0] + "\n"
    (request,) = harness.requests()
    assert request[1] == f"Summarise this customer feedback in one sentence: {FEEDBACK[0]}"


def test_tutorial_step3_batch_summarisation(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    out, namespace = harness.run("001-2", capsys)
    assert namespace["summaries"] == SUMMARIES
    assert out.splitlines() == SUMMARIES
    spans = [(r[3], r[4]) for r in harness.requests()]
    # Computed by default: one after the other (the comment's "in parallel" needs strategy=None).
    assert len(spans) == 4 and sequential(spans)


def test_tutorial_step3_with_strategy_none_runs_in_parallel(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    code = rewrite_imports(SEEDS["001-2"]).replace(
        'user_variables={"text": item},', 'user_variables={"text": item}, strategy=None,'
    )
    assert "strategy=None" in code
    namespace: dict[str, Any] = {"__name__": "seed_001_2_lazy"}
    exec(compile(code, "seed 001-2 with strategy=None", "exec"), namespace)
    assert namespace["summaries"] == SUMMARIES
    spans = [(r[3], r[4]) for r in harness.requests()]
    assert len(spans) == 4
    # In flight simultaneously: every request started before any finished.
    assert max(s for s, _ in spans) < min(e for _, e in spans if e is not None)


def test_tutorial_step4_mixed_parallel_and_sequential(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = harness.run("001-3", capsys)
    assert out.splitlines() == [
        f"Summary:   {SUMMARIES[0]}",
        "Sentiment: mixed",
        f"Issues:    {ISSUES}",
    ]
    summary, issues, sentiment = (harness.by_route(n)[0] for n in ("summary0", "issues", "sentiment"))
    # Computed by default: summarise, then extract_issues; classify_sentiment after both.
    assert sequential([(summary[3], summary[4]), (issues[3], issues[4]), (sentiment[3], sentiment[4])])
    if isinstance(harness, OllamaHarness):
        # @generative sent its return type's schema: a real server could only answer one of the three.
        (record,) = [r for r in harness.server.requests if harness.server.routes[r] == "sentiment"]
        assert record.body["format"]["properties"]["result"]["enum"] == ["positive", "negative", "mixed"]
    assert f"- summary: {SUMMARIES[0]}" in sentiment[1]
