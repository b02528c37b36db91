"""``rxllm demo``: the pipeline on the built-in simulator, three times (passing, stopped by a check,
then a check's failure repaired by an in-stream retry)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import TextIO

import attrs

from backends.demo_answer import DEMO_ANSWER, tokenize
from backends.registry import BACKENDS
from engine.checks import ForbiddenWords, MaxSentences, MaxWords, req
from engine.cli.args import stream_retry
from engine.cli.errors import EXIT_BACKEND_ERROR, EXIT_CHECK_FAILED, EXIT_OK
from engine.cli.output import make_view
from engine.cli.run import instruction, run_once
from engine.cli.view import write
from engine.core.continuation import StreamRetry
from engine.core.requirements import Requirement

__all__ = [
    "DEMO_ANSWER",
    "DEMO_CONTINUATION",
    "DEMO_PROMPT",
    "DemoRun",
    "demo_command",
    "demo_runs",
    "tokenize",
]

DEMO_PROMPT = "How do I keep a sourdough starter healthy?"
DEMO_CONTINUATION = DEMO_ANSWER[DEMO_ANSWER.index(" Between 24") :].replace(
    "24 and 27 degrees Celsius", "75 and 80 degrees Fahrenheit"
)
"""What the simulator answers when run 3 retries: the rest of the answer after the fourth sentence,
its temperatures in Fahrenheit."""


def _intro(delay: float) -> str:
    model = BACKENDS["ollama"].default_model
    return f"""\
rxllm demo: streaming with per-chunk validation, early cancellation and typed events

The model here is a SIMULATOR (ScriptedBackend): it replays a canned answer, one
token every {delay * 1000:.0f} ms, so no model server is needed. Each run goes through
stream_with_chunking: the text is cut into sentences, every sentence is checked by
all requirements in parallel (the "quick checks") before you see it, and the first
failing check cancels the generation at once; with a retry allowed, a new generation
then continues the answer from the text already shown.

To stream from a real model instead:
  rxllm stream "Why is the sky blue?" --backend ollama --model {model}
  rxllm stream "Why is the sky blue?" --backend openai --base-url http://localhost:8000/v1 --model M
"""


def _next_command() -> str:
    """The demo's last words: how to run ``rxllm stream --help`` from here. The bare name when
    this interpreter's ``rxllm`` is the one on PATH; else its path (a virtualenv that is not
    activated, as under ``make demo``) and how to put it on PATH."""
    api = ", and README.md for the Python API."
    script = Path(sys.executable).parent / "rxllm"
    if not script.exists():  # no console script beside this interpreter
        return f"`{Path(sys.executable).name} -m engine stream --help`{api}"
    on_path = shutil.which("rxllm")
    if on_path is not None and Path(on_path).resolve() == script.resolve():
        return f"`rxllm stream --help`{api}"
    shown = os.path.relpath(script)
    if shown.startswith(".."):
        shown = str(script)
    activate = Path(shown).parent / "activate"
    return (
        f"`{shown} stream --help`{api}\n"
        f"(`rxllm` alone is not on your PATH: `source {activate}` puts it there.)"
    )


def _no_long_sentence(chunk: str) -> bool:
    return len(chunk.split()) <= 40


@attrs.frozen
class DemoRun:
    """One run of the demo: what it is called, what it checks, and the exit code it should end with."""

    title: str
    requirements: list[Requirement]
    expected: int = EXIT_OK
    retry: StreamRetry | None = None
    continuations: list[list[str]] = attrs.field(factory=list)
    """The simulator's answer to each retry (``ScriptedBackend(continuations=...)``)."""


def demo_runs() -> list[DemoRun]:
    """The demo's three runs: passing, stopped by a check, and repaired by a retry."""
    forbidden = ForbiddenWords(["guaranteed", "never fails"])
    long_sentence = req("no sentence over 40 words", _no_long_sentence, check_whole_output=False)
    return [
        DemoRun("Run 1 of 3: every check passes", [MaxWords(250), forbidden, long_sentence]),
        DemoRun(
            "Run 2 of 3: same answer, stricter rule: at most 4 sentences",
            [MaxSentences(4), forbidden, long_sentence],
            expected=EXIT_CHECK_FAILED,
        ),
        DemoRun(
            "Run 3 of 3: same answer, 'Celsius' forbidden, one retry allowed (rxllm stream --retries 1)",
            [MaxWords(250), ForbiddenWords(["Celsius"]), long_sentence],
            retry=stream_retry(1),
            continuations=[tokenize(DEMO_CONTINUATION)],
        ),
    ]


async def demo_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``rxllm demo``: three runs on the simulator, then what they showed."""
    from backends.scripted import ScriptedBackend

    json_mode = bool(args.json)

    def say(text: str) -> None:
        # In --json mode standard output carries only events.
        if not json_mode:
            write(out, text + "\n")

    say(_intro(args.delay))
    say(f"Prompt: {DEMO_PROMPT}\n")
    codes = []
    tokens = tokenize(DEMO_ANSWER)
    runs = demo_runs()
    for run in runs:
        reqs = run.requirements
        say(run.title)
        say("  requirements (quick-check verdicts are listed in this order):")
        for number, requirement in enumerate(reqs, 1):
            say(f"    {number}. {requirement.label}")
        backend = ScriptedBackend(
            tokens, delay=args.delay, model_id="simulator", continuations=run.continuations
        )
        view = make_view(args, out, err, demo=True)
        stats = await run_once(
            instruction(DEMO_PROMPT, reqs),
            backend,
            reqs,
            "sentence",
            view,
            title=run.title,
            script_length=len(tokens),
            retry=run.retry,
        )
        codes.append(stats.exit_code)
        say("")
    say(
        "What happened: run 1 delivered every sentence, then ran the final validation on the whole\n"
        "answer. In run 2 the fifth sentence failed its quick check: it was never shown, the\n"
        "generation was cancelled mid-answer (see 'generation: cancelled after N of M tokens'), and\n"
        "there was no final validation. In run 3 the fifth sentence failed too, but a retry was\n"
        "allowed: the sentence was withheld, and a new generation continued the answer from the\n"
        "text already shown, in Fahrenheit; the run passed (see 'retries: 1').\n"
        f"Next: {_next_command()}"
    )
    # The demo succeeds when every run ended as intended: run 2 stopped on its check, the others passed.
    return EXIT_OK if codes == [run.expected for run in runs] else EXIT_BACKEND_ERROR
