"""``rxllm demo``: the pipeline on the built-in simulator, twice (passing, then stopped by a check)."""

from __future__ import annotations

import argparse
import re
from typing import TextIO

from backends.registry import BACKENDS
from engine.checks import ForbiddenWords, MaxSentences, MaxWords, req
from engine.cli.errors import EXIT_BACKEND_ERROR, EXIT_CHECK_FAILED, EXIT_OK
from engine.cli.output import make_view
from engine.cli.run import instruction, run_once
from engine.cli.view import write
from engine.core.requirements import Requirement

__all__ = ["DEMO_ANSWER", "DEMO_PROMPT", "demo_command", "demo_runs", "tokenize"]

DEMO_PROMPT = "How do I keep a sourdough starter healthy?"
DEMO_ANSWER = """\
A sourdough starter is a living culture of wild yeast and lactic acid bacteria, so \
keeping it healthy is mostly about a steady routine. Feed it at the same time every \
day with equal weights of flour and water, and discard most of the old starter first \
so the fresh flour is not spread too thin. Whole rye or whole wheat flour gives the \
microbes more nutrients than white flour and often revives a sluggish culture.

Temperature matters more than most people expect. Between 24 and 27 degrees Celsius \
the yeast is lively and the starter usually doubles within six hours. A cold kitchen \
slows everything down, while a very warm one makes the culture hungry and sour, so \
you may need to feed it twice a day in summer.

Learn to read the signs. A healthy starter smells pleasantly tangy, is full of \
bubbles, and has a domed top when it peaks. A layer of grey liquid on top just means \
it is hungry: pour it off and feed it. Pink or orange streaks, on the other hand, \
mean it has been contaminated and should be thrown away.

If you bake only once a week, keep the starter in the fridge and feed it weekly. \
Take it out a day before baking and give it two feeds at room temperature so it is \
strong again when you mix the dough.
"""


def tokenize(text: str) -> list[str]:
    """Cut *text* into token-like deltas (a word with its leading space, or a punctuation mark).

    Joining the deltas gives *text* back exactly.
    """
    return re.findall(r"\s*[\w'\u2019-]+|\s*[^\w\s]|\s+", text)


def _intro(delay: float) -> str:
    model = BACKENDS["ollama"].default_model
    return f"""\
rxllm demo: streaming with per-chunk validation, early cancellation and typed events

The model here is a SIMULATOR (ScriptedBackend): it replays a canned answer, one
token every {delay * 1000:.0f} ms, so no model server is needed. Each run goes through
stream_with_chunking: the text is cut into sentences, every sentence is checked by
all requirements in parallel (the "quick checks") before you see it, and the first
failing check cancels the generation at once.

To stream from a real model instead:
  rxllm stream "Why is the sky blue?" --backend ollama --model {model}
  rxllm stream "Why is the sky blue?" --backend openai --base-url http://localhost:8000/v1 --model M
"""


def _no_long_sentence(chunk: str) -> bool:
    return len(chunk.split()) <= 40


def demo_runs() -> list[tuple[str, list[Requirement]]]:
    """The demo's two runs: a title and the requirements of each."""
    forbidden = ForbiddenWords(["guaranteed", "never fails"])
    long_sentence = req("no sentence over 40 words", _no_long_sentence, check_whole_output=False)
    return [
        ("Run 1 of 2: every check passes", [MaxWords(250), forbidden, long_sentence]),
        (
            "Run 2 of 2: same answer, stricter rule: at most 4 sentences",
            [MaxSentences(4), forbidden, long_sentence],
        ),
    ]


async def demo_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``rxllm demo``: two runs on the simulator, then what they showed."""
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
    for title, reqs in demo_runs():
        say(title)
        say("  requirements (quick-check verdicts are listed in this order):")
        for number, requirement in enumerate(reqs, 1):
            say(f"    {number}. {requirement.label}")
        backend = ScriptedBackend(tokens, delay=args.delay, model_id="simulator")
        view = make_view(args, out, err, demo=True)
        stats = await run_once(
            instruction(DEMO_PROMPT, reqs),
            backend,
            reqs,
            "sentence",
            view,
            title=title,
            script_length=len(tokens),
        )
        codes.append(stats.exit_code)
        say("")
    say(
        "What happened: run 1 delivered every sentence, then ran the final validation on the whole\n"
        "answer. In run 2 the fifth sentence failed its quick check: it was never shown, the\n"
        "generation was cancelled mid-answer (see 'generation: cancelled after N of M tokens'), and\n"
        "there was no final validation. Next: `rxllm stream --help`, and README.md for the Python API."
    )
    # The demo succeeds when run 1 passed and run 2 stopped on its check, as intended.
    return EXIT_OK if codes == [EXIT_OK, EXIT_CHECK_FAILED] else EXIT_BACKEND_ERROR
