"""The ``rxllm`` command through its entry points, in a subprocess.

Against the scripted backend (no server) and against loopback fake Ollama / OpenAI
servers started by the test on 127.0.0.1: exit codes, ``--json`` parsed and checked
event by event, plain and ``--events`` output, and the error messages. The child runs
with ``-X dev -W error::ResourceWarning`` and must leave nothing on stderr that looks
like a leak.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest
from rich.console import Console

from backends.registry import BACKENDS
from backends.scripted import ScriptedBackend
from engine.checks import ForbiddenWords, MaxSentences, MustNotMatch
from engine.cli import (
    DEMO_ANSWER,
    EXIT_BACKEND_ERROR,
    EXIT_CHECK_FAILED,
    EXIT_CLOSED_PIPE,
    EXIT_INTERRUPTED,
    EXIT_MODEL_MISSING,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    LiveView,
    RunStats,
    event_to_json,
    main,
    run_once,
    tokenize,
)
from engine.cli.errors import for_command_line
from engine.core.events import ChunkEvent, QuickCheckEvent
from engine.core.generation import GenerationInfo
from engine.core.options import ModelOption
from engine.core.requirements import PartialValidationResult
from tests.fake_servers import FakeOllamaServer, FakeOpenAIServer, Reply
from tests.helpers import free_port, sigint_as_in_a_terminal

ROOT = Path(__file__).resolve().parent.parent.parent
PYTHON = [sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-m", "engine"]
LEAKS = ("ResourceWarning", "Unclosed", "Task was destroyed", "never retrieved", "Traceback")
# The child must not pick up a developer's server settings.
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "OPENAI_", "RXLLM_"))}
ENV["PYTHONUNBUFFERED"] = "1"

TEXT = "Rivers carve valleys. They carry silt to the sea.\n\nDeltas form where they slow. That is all."
SENTENCES = [
    "Rivers carve valleys.",
    "They carry silt to the sea.",
    "Deltas form where they slow.",
    "That is all.",
]


@attrs.frozen
class Ran:
    code: int
    out: str
    err: str

    def events(self) -> list[dict[str, Any]]:
        """Every stdout line parsed as JSON (each line must be one event)."""
        return [json.loads(line) for line in self.out.splitlines()]


def _checked(code: int, out: bytes, err: bytes) -> Ran:
    ran = Ran(code, out.decode(), err.decode())
    for leak in LEAKS:
        assert leak not in ran.err, ran.err
    return ran


def rxllm(*args: str, command: list[str] | None = None) -> Ran:
    """Run the command synchronously (no server needed)."""
    proc = subprocess.run(
        [*(command or PYTHON), *args], capture_output=True, env=ENV, cwd=ROOT, timeout=120, check=False
    )
    return _checked(proc.returncode, proc.stdout, proc.stderr)


async def arxllm(*args: str) -> Ran:
    """Run the command while this loop keeps serving a fake server."""
    proc = await asyncio.create_subprocess_exec(
        *PYTHON, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, cwd=ROOT
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return _checked(proc.returncode, out, err)


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


@pytest.fixture
def script(tmp_path: Path) -> str:
    path = tmp_path / "answer.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


# -- the demo ------------------------------------------------------------------------------


def test_demo_shows_three_runs_and_exits_0() -> None:
    ran = rxllm("demo", "--delay", "0.002")
    assert ran.code == EXIT_OK, ran.err
    out = ran.out
    assert "SIMULATOR" in out and "rxllm stream" in out and "--backend ollama" in out
    assert "Run 1 of 2" not in out
    run1, rest = out.split("Run 1 of 3")[1].split("Run 2 of 3")
    run2, rest = rest.split("Run 3 of 3")
    run3, closing = rest.split("What happened:")
    assert "final validation: passed" in run1
    assert "completed: success=True" in run1
    # The sentence count fails at the fifth sentence's first word, before the stream has cut
    # that sentence: the siblings, which check the stream's sentences, never saw it.
    assert "quick check  chunk 4: FAILED  [fail, unknown, unknown]" in run2
    assert "max 4 sentences: FAIL (5 sentences so far, more than the limit of 4)" in run2
    assert "-> chunk 4 is withheld and the generation is cancelled now" in run2
    assert "generation: cancelled after" in run2
    assert "final validation: skipped" in run2
    assert "completed: success=False" in run2
    # The failing (fifth) sentence is never shown.
    assert "Between 24 and 27" in run1 and "Between 24 and 27" not in run2
    assert "s  chunk 4 " not in run2
    # Run 3: the fifth sentence fails, is withheld, and a retry continues the answer from the fourth.
    assert "quick check  chunk 4: FAILED  [unknown, fail, pass]" in run3
    assert "forbidden: Celsius: FAIL (forbidden word 'Celsius')" in run3
    assert "retry        attempt 2: " in run3
    assert "-> a new generation continues the answer from the text shown so far" in run3
    assert "chunk 4      'Between 75 and 80 degrees Fahrenheit the yeast is lively" in run3
    assert "Celsius the yeast" not in run3
    assert run3.index("chunk 3 ") < run3.index("retry  ") < run3.index("chunk 4      'Between 75")
    assert "final validation: passed" in run3 and "completed: success=True" in run3
    assert "retries: 1\n" in run3
    assert "generation: cancelled" not in run3  # the summary tells of the attempt that finished
    assert "In run 3" in closing  # the closing words tell what the third run showed


def test_demo_json_is_one_event_per_line_for_every_run() -> None:
    ran = rxllm("demo", "--delay", "0.002", "--json")
    assert ran.code == EXIT_OK, ran.err
    events = ran.events()
    ends = [i for i, e in enumerate(events) if e["type"] == "CompletedEvent"]
    assert len(ends) == 3
    run1, run2, run3 = events[: ends[0] + 1], events[ends[0] + 1 : ends[1] + 1], events[ends[1] + 1 :]
    sentences = 12
    assert types(run1) == ["QuickCheckEvent", "ChunkEvent"] * sentences + [
        "StreamingDoneEvent",
        "FullValidationEvent",
        "CompletedEvent",
    ]
    assert [e["chunk_index"] for e in run1 if e["type"] == "ChunkEvent"] == list(range(sentences))
    assert run1[-2]["passed"] is True
    assert [r["result"] for r in run1[-2]["results"]] == [True, True, True]
    assert run1[-1]["success"] is True
    assert run1[-1]["full_text"] == DEMO_ANSWER
    assert types(run2) == ["QuickCheckEvent", "ChunkEvent"] * 4 + ["QuickCheckEvent", "CompletedEvent"]
    failed = run2[-2]
    assert failed["passed"] is False and failed["chunk_index"] == 4
    assert failed["results"][0] == {
        "requirement": "The response must be at most 4 sentences.",
        "success": "fail",
        "reason": "5 sentences so far, more than the limit of 4",
        "score": None,
        "retryable": False,
    }
    assert run2[-1]["success"] is False
    elapsed = [e["elapsed"] for e in run2]
    assert elapsed == sorted(elapsed)
    # Run 3: four chunks, the fifth sentence fails and is retried, then the continuation's eight.
    assert types(run3) == ["QuickCheckEvent", "ChunkEvent"] * 4 + ["QuickCheckEvent", "RetryEvent"] + [
        "QuickCheckEvent",
        "ChunkEvent",
    ] * (sentences - 4) + ["StreamingDoneEvent", "FullValidationEvent", "CompletedEvent"]
    retried = run3[9]
    assert retried["type"] == "RetryEvent" and retried["attempt"] == 2
    assert "forbidden word 'Celsius'" in retried["reason"]
    chunks = [e for e in run3 if e["type"] == "ChunkEvent"]
    assert [e["chunk_index"] for e in chunks] == list(range(sentences))
    assert [e["attempt"] for e in chunks] == [1] * 4 + [2] * (sentences - 4)
    assert run3[-2]["passed"] is True
    assert run3[-1]["success"] is True and run3[-1]["attempts_used"] == 2
    assert run3[-1]["full_text"] == DEMO_ANSWER.replace(
        "24 and 27 degrees Celsius", "75 and 80 degrees Fahrenheit"
    )


def test_the_console_script_and_python_m_are_the_same_command() -> None:
    script = Path(sys.executable).with_name("rxllm")
    assert script.exists(), "the rxllm console script is missing: run `pip install -e .` (make does)"
    ran = rxllm("--help", command=[str(script)])
    assert ran.code == EXIT_OK
    assert "demo" in ran.out and "stream" in ran.out
    assert ran.out == rxllm("--help").out


# -- stream on the scripted backend --------------------------------------------------------


def test_stream_plain_prints_the_text_with_its_layout_and_a_summary(script: str) -> None:
    ran = rxllm("stream", "Explain rivers.", "--backend", "scripted", "--script", script, "--delay", "0")
    assert ran.code == EXIT_OK, ran.err
    assert ran.out == TEXT + "\n"  # the paragraph break the sentence chunker dropped is restored
    assert "-- chunks delivered: 4" in ran.err
    assert "-- time to first chunk:" in ran.err


def test_stream_json_with_requirements_from_flags(script: str) -> None:
    ran = rxllm(
        "stream", "Explain rivers.", "--backend", "scripted", "--script", script, "--delay", "0",
        "--json", "--max-words", "100", "--forbid", "ocean,lake", "--regex", r"\d",
    )  # fmt: skip
    assert ran.code == EXIT_OK, ran.err
    events = ran.events()
    assert types(events) == ["QuickCheckEvent", "ChunkEvent"] * 4 + [
        "StreamingDoneEvent",
        "FullValidationEvent",
        "CompletedEvent",
    ]
    assert [e["text"] for e in events if e["type"] == "ChunkEvent"] == SENTENCES
    first = events[0]["results"]
    assert [r["requirement"] for r in first] == [
        "The response must be at most 100 words.",
        "The response must not use these words: ocean, lake.",
        "The response must not match the regular expression '\\\\d'.",
    ]
    assert [r["success"] for r in first] == ["unknown", "pass", "pass"]
    assert events[-3]["full_text"] == TEXT
    assert events[-2]["passed"] is True
    assert events[-2]["results"][0]["reason"] == "17 words, within the limit of 100"
    assert all(isinstance(e["timestamp"], float) for e in events)


def test_stream_fails_mid_stream_with_exit_1(script: str) -> None:
    ran = rxllm(
        "stream", "Explain rivers.", "--backend", "scripted", "--script", script, "--delay", "0.005",
        "--json", "--max-sentences", "2",
    )  # fmt: skip
    assert ran.code == EXIT_CHECK_FAILED
    events = ran.events()
    assert types(events) == ["QuickCheckEvent", "ChunkEvent"] * 2 + ["QuickCheckEvent", "CompletedEvent"]
    assert events[-2]["results"][0]["success"] == "fail"
    assert events[-1] | {"timestamp": 0, "elapsed": 0} == {
        "type": "CompletedEvent",
        "timestamp": 0,
        "elapsed": 0,
        "success": False,
        "full_text": "Rivers carve valleys. They carry silt to the sea.",
        "attempts_used": 1,
    }


def test_stream_events_lines_and_word_chunking(script: str) -> None:
    ran = rxllm(
        "stream", "Explain rivers.", "--backend", "scripted", "--script", script, "--delay", "0",
        "--events", "--chunking", "word", "--forbid", "silt",
    )  # fmt: skip
    assert ran.code == EXIT_CHECK_FAILED
    lines = [line.strip() for line in ran.out.splitlines()]
    at = next(i for i, line in enumerate(lines) if line.endswith("quick check  chunk 5: FAILED  [fail]"))
    assert lines[at + 1] == "forbidden: silt: FAIL (forbidden word 'silt')"
    assert lines[at + 2].endswith("completed: success=False")
    assert "chunk 4      'carry'" in ran.out
    assert "completed: success=False" in ran.out
    assert "failed quick checks: 1 (forbidden: silt (forbidden word 'silt'))" in ran.out


@pytest.mark.asyncio
async def test_stream_retries_a_failed_sentence_and_exits_0_when_the_retry_passes() -> None:
    repaired = " They carry mud to the sea.\n\nDeltas form where they slow. That is all."
    async with FakeOllamaServer() as server:
        server.enqueue(Reply(deltas=tokenize(TEXT)), Reply(deltas=tokenize(repaired)))
        ran = await arxllm("stream", "x", "--base-url", server.url, "--forbid", "silt", "--retries", "1")
        continued = server.requests[-1].body["messages"][-1]
    assert ran.code == EXIT_OK, ran.err  # the failure was repaired: the run passed
    assert (
        ran.out
        == "Rivers carve valleys. They carry mud to the sea.\n\nDeltas form where they slow. That is all.\n"
    )
    assert continued == {"role": "assistant", "content": "Rivers carve valleys."}
    assert "-- failed quick checks: 1 (forbidden: silt (forbidden word 'silt'))" in ran.err
    assert "-- retries: 1\n" in ran.err
    assert "-- final validation: passed" in ran.err
    assert "generation: cancelled" not in ran.err  # the summary tells of the attempt that finished


def test_stream_retries_exits_1_when_every_attempt_fails(script: str) -> None:
    # The simulator replays its script for the retry too, so the same sentence fails again.
    ran = rxllm(
        "stream", "x", "--backend", "scripted", "--script", script, "--delay", "0",
        "--json", "--forbid", "silt", "--retries", "1",
    )  # fmt: skip
    assert ran.code == EXIT_CHECK_FAILED
    events = ran.events()
    assert types(events).count("RetryEvent") == 1
    assert events[-1]["success"] is False and events[-1]["attempts_used"] == 2


def test_stream_reads_the_script_from_stdin() -> None:
    proc = subprocess.run(
        [*PYTHON, "stream", "x", "--backend", "scripted", "--script", "-", "--delay", "0", "--json"],
        input=b"One. Two.",
        capture_output=True,
        env=ENV,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    ran = _checked(proc.returncode, proc.stdout, proc.stderr)
    assert ran.code == EXIT_OK
    assert [e["text"] for e in ran.events() if e["type"] == "ChunkEvent"] == ["One.", "Two."]


def test_ctrl_c_exits_130_and_says_so() -> None:
    proc = subprocess.Popen(
        [*PYTHON, "stream", "x", "--backend", "scripted", "--delay", "0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
        cwd=ROOT,
        preexec_fn=sigint_as_in_a_terminal,
    )
    assert proc.stdout is not None
    # Returns once the first chunk is printed: the run is streaming.
    first = os.read(proc.stdout.fileno(), 12)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    ran = _checked(proc.returncode, first + out, err)
    assert ran.code == EXIT_INTERRUPTED
    assert ran.out.startswith("A sourdough starter")
    assert "-- total time:" in ran.err  # the summary of what was done, then the interruption once
    assert ran.err.rstrip().endswith("rxllm: interrupted")


# -- bad command lines ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "required: COMMAND"),
        (["stream"], "required: PROMPT"),
        (["stream", "x", "--max-sentences", "-1"], "expected a whole number >= 0, got '-1'"),
        (["stream", "x", "--max-words", "many"], "expected a whole number >= 0, got 'many'"),
        (["stream", "x", "--regex", "(oops"], "argument --regex: '(oops' is not a valid regular expression"),
        (["stream", ""], "argument PROMPT: the prompt is empty"),
        (["stream", "  \n"], "argument PROMPT: the prompt is empty"),
        (["stream", "--forbid", "a", "b", "x"], "--forbid takes one word (or a comma list"),
        (["stream", "x", "--forbid", "a,,b"], "argument --forbid: an empty word in 'a,,b'"),
        (
            ["stream", "x", "--api-key", "k"],
            "--api-key does not apply to --backend ollama (only to --backend openai)",
        ),
        (
            ["stream", "x", "--backend", "scripted", "--temperature", "0.5"],
            "--temperature does not apply to --backend scripted",
        ),
        (["stream", "x", "--max-tokens", "0"], "argument --max-tokens: expected a whole number >= 1"),
        (["stream", "x", "--timeout", "0"], "argument --timeout: expected a number of seconds > 0"),
        (["stream", "x", "--base-url", "localhost:11434"], "expected an http:// or https:// URL"),
        (["stream", "x", "--chunking", "line"], "invalid choice: 'line'"),
        (["stream", "x", "--backend", "vllm"], "invalid choice: 'vllm'"),
        (
            ["stream", "x", "--script", "a.txt"],
            "--script does not apply to --backend ollama (only to --backend scripted)",
        ),
        (["stream", "x", "--backend", "scripted", "--script", "/nonexistent/a.txt"], "no such file"),
        (["stream", "x", "--json", "--events"], "not allowed with argument"),
        (["stream", "x", "--backend", "openai"], "--backend openai needs --model"),
        (["demo", "--delay", "-1"], "expected a number of seconds >= 0"),
    ],
)
def test_bad_flags_exit_2_and_say_what_is_wrong(args: list[str], message: str) -> None:
    ran = rxllm(*args)
    assert ran.code == EXIT_USAGE
    assert message in ran.err
    assert ran.out == ""
    # The usage of the command that was mistyped, not the top-level one; the error said once.
    if args:
        assert ran.err.startswith(f"usage: rxllm {args[0]} ")
    assert ran.err.count("error:") == 1


# -- real HTTP backends against loopback fake servers ---------------------------------------------


@pytest.mark.asyncio
async def test_stream_from_ollama_with_json_events() -> None:
    async with FakeOllamaServer(Reply(deltas=tokenize(TEXT))) as server:
        ran = await arxllm(
            "stream", "Explain rivers.", "--base-url", server.url, "--model", "tiny",
            "--json", "--max-sentences", "5", "--forbid", "ocean",
        )  # fmt: skip
        record = server.requests[-1]
    assert ran.code == EXIT_OK, ran.err
    events = ran.events()
    assert types(events)[-3:] == ["StreamingDoneEvent", "FullValidationEvent", "CompletedEvent"]
    assert [e["text"] for e in events if e["type"] == "ChunkEvent"] == SENTENCES
    assert events[-1]["full_text"] == TEXT
    # The model was asked for what the flags check.
    assert record.body["model"] == "tiny"
    prompt = json.dumps(record.body["messages"])
    assert "Explain rivers." in prompt and "at most 5 sentences" in prompt and "ocean" in prompt


@pytest.mark.asyncio
async def test_a_failing_check_closes_the_connection_to_the_server() -> None:
    deltas = tokenize(TEXT)
    async with FakeOllamaServer(Reply(deltas=deltas, delay=0.01)) as server:
        ran = await arxllm("stream", "x", "--base-url", server.url, "--max-sentences", "1")
        record = server.requests[-1]
        await record.wait_disconnected(within=5)
    assert ran.code == EXIT_CHECK_FAILED
    assert ran.out == "Rivers carve valleys.\n"
    assert "-- generation: cancelled after" in ran.err
    assert record.frames_written < len(deltas)


@pytest.mark.asyncio
async def test_stream_from_an_openai_compatible_server() -> None:
    async with FakeOpenAIServer(Reply(deltas=tokenize(TEXT))) as server:
        ran = await arxllm(
            "stream", "x", "--backend", "openai", "--base-url", server.url, "--model", "m",
            "--api-key", "sk-test", "--chunking", "paragraph",
        )  # fmt: skip
        record = server.requests[-1]
    assert ran.code == EXIT_OK, ran.err
    assert ran.out == TEXT + "\n"
    assert record.headers.get("Authorization") == "Bearer sk-test"


def test_unreachable_server_exits_3_with_a_hint() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    ran = rxllm("stream", "x", "--base-url", url, "--json")
    assert ran.code == EXIT_UNREACHABLE
    events = ran.events()
    assert types(events) == ["ErrorEvent", "CompletedEvent"]
    assert events[0]["exception_type"] == "BackendUnreachableError"
    assert events[1]["success"] is False
    assert url in ran.err
    assert "hint: start it with `ollama serve`" in ran.err
    assert "rxllm demo" in ran.err


@pytest.mark.asyncio
async def test_missing_model_exits_4_and_says_how_to_get_it() -> None:
    reply = Reply(status=404, error='model "nope" not found, try pulling it first')
    async with FakeOllamaServer(reply) as server:
        ran = await arxllm("stream", "x", "--base-url", server.url, "--model", "nope")
    assert ran.code == EXIT_MODEL_MISSING
    assert "ModelNotFoundError" in ran.err
    assert "ollama pull nope" in ran.err
    assert ran.out == ""


@pytest.mark.asyncio
async def test_missing_model_on_openai_exits_4() -> None:
    async with FakeOpenAIServer(Reply(status=404, error="The model `nope` does not exist")) as server:
        ran = await arxllm("stream", "x", "--backend", "openai", "--base-url", server.url, "--model", "nope")
    assert ran.code == EXIT_MODEL_MISSING
    assert "--model" in ran.err


@pytest.mark.asyncio
async def test_server_error_mid_stream_exits_5_after_the_text_that_arrived() -> None:
    reply = Reply(deltas=tokenize(TEXT), error="out of memory", error_after=12)
    async with FakeOllamaServer(reply) as server:
        ran = await arxllm("stream", "x", "--base-url", server.url, "--json")
    assert ran.code == EXIT_BACKEND_ERROR
    events = ran.events()
    assert types(events)[-2:] == ["ErrorEvent", "CompletedEvent"]
    assert [e["text"] for e in events if e["type"] == "ChunkEvent"][:2] == SENTENCES[:2]
    assert "out of memory" in events[-2]["detail"]
    assert "out of memory" in ran.err


# -- in process: the JSON form of events ----------------------------------------------------------


def test_event_to_json_names_the_requirement_of_each_result() -> None:
    reqs = (MaxSentences(2), ForbiddenWords(["x"]))
    event = QuickCheckEvent(
        chunk_index=3,
        passed=False,
        results=(PartialValidationResult("fail", reason="3 > 2"), PartialValidationResult("pass")),
        requirements=reqs,
    )
    data = event_to_json(event, elapsed=1.5)
    assert json.loads(json.dumps(data)) == data
    assert data["type"] == "QuickCheckEvent" and data["elapsed"] == 1.5 and data["chunk_index"] == 3
    assert data["results"][0] == {
        "requirement": "The response must be at most 2 sentences.",
        "success": "fail",
        "reason": "3 > 2",
        "score": None,
        "retryable": True,
    }
    assert "requirements" not in data
    chunk = event_to_json(ChunkEvent(text="Hi.", chunk_index=0), elapsed=0.25)
    assert chunk == {
        "type": "ChunkEvent",
        "elapsed": 0.25,
        "timestamp": chunk["timestamp"],
        "text": "Hi.",
        "chunk_index": 0,
        "attempt": 1,
        "start": 0,
        "gap": "",
    }


def test_tokenize_round_trips() -> None:
    for text in (TEXT, DEMO_ANSWER, "", "  a  b\n\n", "it's 24-27 °C!"):
        assert "".join(tokenize(text)) == text
    assert tokenize("Hi, you.") == ["Hi", ",", " you", "."]


# -- in process: the live view ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_live_view_renders_text_checks_and_summary() -> None:
    from rich.console import Console

    from backends.scripted import ScriptedBackend
    from engine.cli import LiveView, run_once

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=100, height=40, color_system=None)
    backend = ScriptedBackend(tokenize(TEXT), delay=0.002)
    reqs = [MaxSentences(2), ForbiddenWords(["ocean"])]
    stats = await run_once(
        "Explain rivers.", backend, reqs, "sentence", LiveView(console), title="scripted · test"
    )
    assert stats.exit_code == EXIT_CHECK_FAILED
    assert stats.chunks == 2
    assert stats.failures == ["max 2 sentences (3 sentences so far, more than the limit of 2)"]
    screen = buffer.getvalue()
    assert "scripted · test" in screen
    assert "waiting for the model" in screen  # the spinner line before the first chunk
    assert "They carry silt to the sea." in screen
    assert "✓ chunk 1: unknown · pass" in screen
    assert "✗ chunk 2: FAILED: max 2 sentences" in screen
    assert "Deltas form" not in screen  # the failing sentence is never shown
    for row in ("chunks delivered", "failed quick checks", "time to first chunk", "total time"):
        assert row in screen


class _ComputedBackend:
    """A broken backend: ignores ModelOption.STREAM and returns a finished thunk."""

    async def generate_from_context(
        self, action: Any, ctx: Any, *, format: Any = None, model_options: Any = None
    ) -> tuple[Any, Any]:
        from engine.core.thunk import ModelOutputThunk

        thunk: ModelOutputThunk[str] = ModelOutputThunk(value="done")
        return thunk, ctx.add(action).add(thunk)


@pytest.mark.asyncio
async def test_an_error_before_the_stream_still_ends_the_json_events() -> None:
    from engine.cli import JsonView, run_once

    buffer = io.StringIO()
    stats = await run_once(
        "x", _ComputedBackend(), [MaxSentences(1)], "sentence", JsonView(buffer), title="t"
    )
    events = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert types(events) == ["ErrorEvent", "CompletedEvent"]
    assert events[0]["exception_type"] == "RuntimeError"
    assert "does not honour ModelOption.STREAM" in events[0]["detail"]
    assert events[1]["success"] is False
    assert stats.exit_code == EXIT_BACKEND_ERROR


# -- the command as people use it in a shell ------------------------------------------------------


def _read_then_close(args: list[str], want: int | None) -> tuple[Ran, bytes]:
    """Start the command, read *want* bytes (or one line when None) of its output, close the pipe."""
    proc = subprocess.Popen(
        [*PYTHON, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, cwd=ROOT
    )
    assert proc.stdout is not None and proc.stderr is not None
    head = proc.stdout.readline() if want is None else proc.stdout.read(want)
    proc.stdout.close()  # what `| head` does once it has its bytes
    err = proc.stderr.read()
    proc.stderr.close()
    proc.wait(timeout=60)
    return _checked(proc.returncode, b"", err), head


def test_a_closed_pipe_ends_the_run_quietly() -> None:
    ran, head = _read_then_close(["stream", "x", "--backend", "scripted", "--delay", "0.01"], 30)
    assert head == DEMO_ANSWER.encode()[:30]
    assert ran.code == EXIT_CLOSED_PIPE
    assert ran.err == ""  # no traceback, no "Exception ignored", no summary


@pytest.mark.asyncio
async def test_a_closed_pipe_after_one_json_line_stops_the_generation() -> None:
    deltas = tokenize(TEXT * 20)
    async with FakeOllamaServer(Reply(deltas=deltas, delay=0.005)) as server:
        ran, head = await asyncio.to_thread(
            _read_then_close, ["stream", "x", "--base-url", server.url, "--json"], None
        )
        record = server.requests[-1]
        await record.wait_disconnected(within=5)
    assert json.loads(head)["type"] == "ChunkEvent"  # no requirements: no quick checks
    assert ran.code == EXIT_CLOSED_PIPE
    assert ran.err == ""
    assert record.frames_written < len(deltas)


def test_version() -> None:
    ran = rxllm("--version")
    assert ran.code == EXIT_OK
    assert ran.out == "rxllm 0.1.0\n"


@pytest.mark.asyncio
@pytest.mark.parametrize("server_class", [FakeOllamaServer, FakeOpenAIServer])
async def test_generation_flags_reach_the_server(server_class: type[FakeOllamaServer]) -> None:
    openai = server_class is FakeOpenAIServer
    async with server_class(Reply(deltas=tokenize(TEXT))) as server:
        ran = await arxllm(
            "stream", "Explain rivers.", "--base-url", server.url, "--model", "m",
            *(["--backend", "openai"] if openai else []),
            "--max-tokens", "64", "--temperature", "0.2", "--seed", "7", "--system", "Answer like a geologist.",
        )  # fmt: skip
        body = server.requests[-1].body
    assert ran.code == EXIT_OK, ran.err
    options = body if openai else body["options"]
    assert options["max_tokens" if openai else "num_predict"] == 64
    assert options["temperature"] == 0.2
    assert options["seed"] == 7
    assert body["messages"][0] == {"role": "system", "content": "Answer like a geologist."}
    assert "Explain rivers." in body["messages"][1]["content"]


class ConstructorRecordingBackend(ScriptedBackend):
    """Stands in for a registry entry's class: records its constructor arguments in ``seen``."""

    seen: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        model_id: str,
        *,
        base_url: str | None = None,
        timeout: float | None = None,
        model_options: dict[str, Any] | None = None,
    ) -> None:
        ConstructorRecordingBackend.seen = {
            "model_id": model_id,
            "timeout": timeout,
            "model_options": model_options,
        }
        super().__init__(["Fine."], model_id=model_id)


def test_timeout_and_options_go_to_the_backend_constructor(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = attrs.evolve(
        BACKENDS["ollama"], target=f"{__name__}:ConstructorRecordingBackend", check_reachable=False
    )
    monkeypatch.setitem(BACKENDS, "ollama", fake)  # type: ignore[index]
    code = main(["stream", "x", "--plain", "--timeout", "2.5", "--seed", "3", "--model", "tiny"])
    assert code == EXIT_OK, capsys.readouterr().err
    assert ConstructorRecordingBackend.seen == {
        "model_id": "tiny",
        "timeout": 2.5,
        "model_options": {ModelOption.SEED: 3},
    }
    assert capsys.readouterr().out == "Fine.\n"


@pytest.mark.asyncio
async def test_timeout_ends_a_slow_generation() -> None:
    async with FakeOllamaServer(Reply(deltas=tokenize(TEXT * 10), delay=0.05)) as server:
        ran = await arxllm("stream", "x", "--base-url", server.url, "--timeout", "0.5", "--json")
    assert ran.code == EXIT_BACKEND_ERROR
    assert types(ran.events())[-2:] == ["ErrorEvent", "CompletedEvent"]
    assert "did not finish within --timeout 0.5 s" in ran.err
    assert "timeout=" not in ran.err and "thunk" not in ran.err


@pytest.mark.asyncio
async def test_verbose_logs_what_the_backend_does() -> None:
    async with FakeOllamaServer(Reply(deltas=tokenize(TEXT))) as server:
        quiet = await arxllm("stream", "x", "--base-url", server.url)
        ran = await arxllm("stream", "x", "--base-url", server.url, "--verbose")
    assert ran.code == EXIT_OK, ran.err
    assert f"POST {server.url}/api/chat" in ran.err
    assert "POST" not in quiet.err


@pytest.mark.asyncio
async def test_verbose_shows_the_requests_the_retry_and_its_reason_the_cancel_and_the_close() -> None:
    repaired = " They carry mud to the sea.\n\nDeltas form where they slow. That is all."
    async with FakeOllamaServer() as server:
        server.enqueue(Reply(deltas=tokenize(TEXT), delay=0.01), Reply(deltas=tokenize(repaired)))
        ran = await arxllm(
            "stream", "x", "--base-url", server.url, "--forbid", "silt", "--retries", "1", "--verbose"
        )
    assert ran.code == EXIT_OK, ran.err
    lines = ran.err.splitlines()
    assert len([line for line in lines if line.startswith("rxllm: backends.") and ": POST " in line]) == 2
    [retry] = [line for line in lines if line.startswith("rxllm: engine.attempts: retrying the stream")]
    assert "(attempt 2 of 2): chunk 1 failed: " in retry and retry.endswith("forbidden word 'silt'"), retry
    [cancel] = [line for line in lines if "cancelled the generation" in line]
    assert "connection closed" in cancel, cancel
    help_text = rxllm("stream", "--help").out
    assert "requests, retries with reasons, the cancel, the connection" in " ".join(help_text.split())


def test_an_unreachable_server_is_reported_once_with_flags_to_use() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    ran = rxllm("stream", "x", "--base-url", url)
    assert ran.code == EXIT_UNREACHABLE
    assert ran.err.count("Cannot reach Ollama") == 1
    assert "--base-url" in ran.err
    for python_advice in ("base_url=", "ScriptedBackend", "start_session"):
        assert python_advice not in ran.err


@pytest.mark.asyncio
async def test_a_refused_key_says_which_flag_gives_one() -> None:
    async with FakeOpenAIServer(Reply(status=401, error="Incorrect API key provided")) as server:
        ran = await arxllm("stream", "x", "--backend", "openai", "--base-url", server.url, "--model", "m")
    assert ran.code == EXIT_BACKEND_ERROR
    assert ran.err.count("Incorrect API key provided") == 1
    assert "--api-key (or $OPENAI_API_KEY)" in ran.err
    assert "api_key=" not in ran.err


@pytest.mark.asyncio
async def test_a_rate_limit_does_not_point_at_the_check_retries_flag() -> None:
    # The backend's retries= (re-send a refused request) is not `rxllm stream --retries` (continue
    # an answer that failed a check): the advice about it is for Python and is left out.
    reply = Reply(status=429, error="Too many requests", headers={"Retry-After": "2"})
    async with FakeOllamaServer(reply) as server:
        ran = await arxllm("stream", "x", "--base-url", server.url)
    assert ran.code == EXIT_BACKEND_ERROR
    assert ran.err.count("Too many requests") == 1
    assert "Rate limited: retry after 2 s, or lower the number of concurrent generations." in ran.err
    assert "retries=" not in ran.err and "--retries" not in ran.err


def test_advice_for_python_becomes_advice_for_flags() -> None:
    message = (
        "Cannot reach Ollama at http://h:1 (refused). Is `ollama serve` running? Set OLLAMA_HOST or pass "
        "base_url= to use another server. Raise connect_timeout= if the server is slow. "
        "The text received so far is kept on the thunk."
    )
    assert for_command_line(message) == (
        "Cannot reach Ollama at http://h:1 (refused). Is `ollama serve` running? Set OLLAMA_HOST or pass "
        "--base-url to use another server."
    )
    timeout = (
        "Ollama at http://h/api/chat did not finish within timeout=0.5 s (after 3 deltas); the text "
        "received so far is kept on the thunk. Raise timeout= (None: no deadline) or lower the output length."
    )
    assert for_command_line(timeout) == (
        "Ollama at http://h/api/chat did not finish within --timeout 0.5 s (after 3 deltas). "
        "Raise --timeout or lower the output length."
    )
    assert (
        for_command_line("A body over 9 bytes (raise max_body_bytes= if expected): 'x'.")
        == "A body over 9 bytes: 'x'."
    )
    assert for_command_line("Pass max_body_bytes=.") == "Pass max_body_bytes=."  # never an empty message
    assert for_command_line(message, ("Is `ollama serve` running?",)).startswith(
        "Cannot reach Ollama at http://h:1 (refused). Set OLLAMA_HOST"
    )


def test_forbid_takes_a_word_per_flag_or_a_comma_list(script: str) -> None:
    ran = rxllm(
        "stream", "x", "--backend", "scripted", "--script", script, "--delay", "0", "--json",
        "--forbid", "ocean", "--forbid", "lake,new york",
    )  # fmt: skip
    assert ran.code == EXIT_OK, ran.err
    [result] = ran.events()[0]["results"]
    assert result["requirement"] == "The response must not use these words: ocean, lake, new york."


# A whole-output check that no single sentence fails: the final validation catches it.
SPANNING = r"valleys\. They"


@pytest.mark.parametrize("mode", ["--plain", "--events", "--json"])
def test_a_failed_final_validation_shows_its_reason(script: str, mode: str) -> None:
    ran = rxllm(
        "stream", "x", "--backend", "scripted", "--script", script, "--delay", "0", mode, "--regex", SPANNING
    )
    assert ran.code == EXIT_CHECK_FAILED
    reason = "'valleys. They' matches /valleys\\. They/"
    if mode == "--json":
        final = ran.events()[-2]
        assert final["type"] == "FullValidationEvent" and final["passed"] is False
        assert final["results"][0]["reason"] == reason
    else:
        shown = ran.err if mode == "--plain" else ran.out
        assert f"final validation: FAILED (must not match /{SPANNING}/ ({reason}))" in shown


@pytest.mark.asyncio
async def test_the_live_view_shows_the_final_validations_reason() -> None:
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=160, height=40, color_system=None)
    reqs = [MustNotMatch(SPANNING)]
    stats = await run_once(
        "x", ScriptedBackend(tokenize(TEXT)), reqs, "sentence", LiveView(console), title="t"
    )
    assert stats.exit_code == EXIT_CHECK_FAILED
    assert f"FAILED (must not match /{SPANNING}/ ('valleys. They' matches" in buffer.getvalue()


def test_the_spinner_says_what_the_run_waits_for() -> None:
    view = LiveView(Console(file=io.StringIO()))
    view.stats = RunStats(chunking="sentence")
    assert view.status() == "waiting for the model..."
    view.stats.generation = GenerationInfo(deltas_received=3)
    assert view.status() == "waiting for the first sentence... (3 tokens so far)"
    view.stats.chunks = 1
    assert view.status() == "waiting for the next sentence... (3 tokens so far)"


def _read_slowly(fd: int) -> bytes:
    """Read a pseudo-terminal the way a busy terminal emulator does: 256 bytes every 10 ms."""
    out = b""
    while True:
        try:
            data = os.read(fd, 256)
        except OSError:  # EIO: the child closed its side
            return out
        if not data:
            return out
        out += data
        time.sleep(0.01)


async def _run_to_a_failed_check(url: str, *, terminal: bool) -> int:
    """Run `rxllm stream` (word chunks, at most 12 words) with stdout on a slow terminal or a pipe;
    return the chunks it delivered."""
    args = [*PYTHON, "stream", "x", "--base-url", url, "--chunking", "word", "--max-words", "12"]
    env = ENV | {"COLUMNS": "100", "LINES": "30", "TERM": "xterm"}
    if terminal:
        import pty

        main_fd, child_fd = pty.openpty()
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=child_fd, stderr=subprocess.PIPE, env=env, cwd=ROOT
        )
        os.close(child_fd)
        screen, (_, err) = await asyncio.gather(asyncio.to_thread(_read_slowly, main_fd), proc.communicate())
        os.close(main_fd)
        text = (screen + err).decode(errors="replace")
    else:
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT
        )
        out, err = await proc.communicate()
        text = (out + err).decode()
    assert proc.returncode == EXIT_CHECK_FAILED, text
    return int(re.findall(r"chunks delivered\W+(\d+)", text)[-1])


@pytest.mark.asyncio
async def test_a_terminal_run_cancels_as_early_as_a_piped_one() -> None:
    """Drawing must not hold the event loop: with a token every 2 ms and a terminal slow to take
    the output, the failing word stops the generation after as many tokens as when piped."""
    deltas = tokenize(TEXT * 20)

    async def frames_sent(terminal: bool) -> int:
        assert await _run_to_a_failed_check(server.url, terminal=terminal) == 12
        record = server.requests[-1]
        await record.wait_disconnected(within=5)
        return record.frames_written

    async with FakeOllamaServer(Reply(deltas=deltas, delay=0.002)) as server:
        piped = await frames_sent(terminal=False)
        live = [await frames_sent(terminal=True) for _ in range(2)]
    assert piped < len(deltas)
    assert max(live) <= piped + 2, (live, piped)


def test_adding_a_backend_is_one_registry_entry(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from backends.registry import BackendEntry
    from engine.session_start import start_session

    echo = BackendEntry(
        name="echo",
        summary="a backend added by one entry",
        target=f"{__name__}:ConstructorRecordingBackend",
        model_required=True,
        model_example="echo-1",
    )
    monkeypatch.setitem(BACKENDS, "echo", echo)  # type: ignore[index]
    assert main(["stream", "x", "--backend", "echo", "--model", "e1", "--plain"]) == EXIT_OK
    assert ConstructorRecordingBackend.seen["model_id"] == "e1"
    assert capsys.readouterr().out == "Fine.\n"
    with pytest.raises(SystemExit):
        main(["stream", "--help"])
    assert "echo: a backend added by one entry" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["stream", "x", "--backend", "echo"])
    assert "--backend echo needs --model: the name the server serves, e.g. echo-1" in capsys.readouterr().err
    assert isinstance(start_session("echo", "e2").backend, ConstructorRecordingBackend)
    with pytest.raises(ValueError, match="the 'echo' backend needs a model_id"):
        start_session("echo")
