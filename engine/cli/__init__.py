"""The ``rxllm`` command: ``rxllm demo`` and ``rxllm stream PROMPT``.

``rxllm demo`` runs the whole pipeline on the built-in simulator (no model server):
a realistic answer replayed a token at a time, streamed through
:func:`~engine.assembly.stream_with_chunking` with ready-made requirements, twice —
once passing, once stopped mid-stream by a failing check.

``rxllm stream PROMPT`` streams from a real server (any backend of
``backends.registry``) with per-chunk validation. When standard output is a terminal
it shows a live view (validated text as it arrives, a line per quick check, a
spinner while the model is thinking, a summary); otherwise it prints plain text.
``--events`` prints one line per event, ``--json`` one JSON object per event (for
scripts).

Exit codes: 0 success; 1 a requirement failed (mid-stream or in the final
validation); 2 bad command line; 3 the server cannot be reached; 4 the model is not
on the server; 5 any other backend error; 130 interrupted; 141 standard output was
closed by its reader.

Modules: ``args`` (the parsers and what the flags ask for), ``stream`` and ``demo``
(the two commands), ``run`` (one run), ``stats`` (what a run did, and its summary),
``labels`` (requirements and verdicts in a line), ``view`` (what a view implements,
and writing that notices a closed pipe) with ``plain``, ``event_lines``,
``json_lines`` and ``live`` (the views) and ``output`` (which one), ``errors`` (exit
codes and error messages), ``main`` (the entry point). They import one way: ``run``
uses ``view`` and ``stats``, never the reverse.
"""

from engine.cli.demo import DEMO_ANSWER, tokenize
from engine.cli.errors import (
    EXIT_BACKEND_ERROR,
    EXIT_CHECK_FAILED,
    EXIT_CLOSED_PIPE,
    EXIT_INTERRUPTED,
    EXIT_MODEL_MISSING,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)
from engine.cli.json_lines import JsonView, event_to_json
from engine.cli.live import LiveView
from engine.cli.main import main
from engine.cli.run import run_once
from engine.cli.stats import RunStats

__all__ = [
    "DEMO_ANSWER",
    "EXIT_BACKEND_ERROR",
    "EXIT_CHECK_FAILED",
    "EXIT_CLOSED_PIPE",
    "EXIT_INTERRUPTED",
    "EXIT_MODEL_MISSING",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "JsonView",
    "LiveView",
    "RunStats",
    "event_to_json",
    "main",
    "run_once",
    "tokenize",
]
