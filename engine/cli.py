"""The ``rxllm`` command: ``rxllm demo`` and ``rxllm stream PROMPT``.

``rxllm demo`` runs the whole pipeline on the built-in simulator (no model server):
a realistic answer replayed a token at a time, streamed through
:func:`~engine.streaming.stream_with_chunking` with ready-made requirements, twice —
once passing, once stopped mid-stream by a failing check.

``rxllm stream PROMPT`` streams from a real server (Ollama or any OpenAI-compatible
one) with per-chunk validation. When standard output is a terminal it shows a live
view (validated text as it arrives, a line per quick check, a spinner while the model
is thinking, a summary); otherwise it prints plain text. ``--events`` prints one line
per event, ``--json`` one JSON object per event (for scripts).

Exit codes: 0 success; 1 a requirement failed (mid-stream or in the final
validation); 2 bad command line; 3 the server cannot be reached; 4 the model is not
on the server; 5 any other backend error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO, cast

import attrs

from engine.checks import ChunkCheck, ForbiddenWords, MaxCharacters, MaxSentences, MaxWords, MustNotMatch, req
from engine.core.components import Instruction
from engine.core.context import SimpleContext
from engine.core.events import (
    ChunkEvent,
    CompletedEvent,
    ErrorEvent,
    FullValidationEvent,
    QuickCheckEvent,
    StreamEvent,
    StreamingDoneEvent,
)
from engine.core.requirements import PartialValidationResult, Requirement, ValidationResult
from engine.session import DEFAULT_OLLAMA_MODEL

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live

    from engine.core.backend import Backend

__all__ = [
    "EXIT_BACKEND_ERROR",
    "EXIT_CHECK_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_MODEL_MISSING",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "main",
]

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_MODEL_MISSING = 4
EXIT_BACKEND_ERROR = 5
EXIT_INTERRUPTED = 130

DEFAULT_MODELS = {"ollama": DEFAULT_OLLAMA_MODEL, "scripted": "scripted"}
"""The model asked for when neither --model nor $RXLLM_MODEL names one (openai needs one named)."""
DEMO_DELAY = 0.03
"""Seconds between two simulated tokens in ``rxllm demo``."""

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


# -- labels and descriptions --------------------------------------------------------------


def label(requirement: Requirement) -> str:
    """A short name for *requirement* in a line of output."""
    if isinstance(requirement, MaxSentences | MaxWords | MaxCharacters):
        plural = "" if requirement.limit == 1 else "s"
        return f"max {requirement.limit} {requirement.unit}{plural}"
    if isinstance(requirement, ForbiddenWords):
        return "forbidden: " + ", ".join(requirement.words)
    if isinstance(requirement, MustNotMatch):
        return f"must not match /{requirement.pattern.pattern}/"
    if isinstance(requirement, ChunkCheck):
        return requirement.description or "check"
    description = requirement.format_for_llm() if hasattr(requirement, "format_for_llm") else ""
    return description or type(requirement).__name__


def _verdict_text(result: PartialValidationResult) -> str:
    text = result.success if result.success != "fail" else "FAIL"
    return f"{text} ({result.reason})" if result.reason else text


def _quick_check_lines(event: QuickCheckEvent, requirements: Sequence[Requirement]) -> list[str]:
    reqs = event.requirements or tuple(requirements)
    names = [label(r) for r in reqs] if len(reqs) == len(event.results) else []
    names += [f"requirement {i + 1}" for i in range(len(names), len(event.results))]
    return [f"{name}: {_verdict_text(result)}" for name, result in zip(names, event.results, strict=True)]


def _failures(event: QuickCheckEvent, requirements: Sequence[Requirement]) -> list[str]:
    """``"label (reason)"`` for each requirement that failed in *event*."""
    reqs = event.requirements or tuple(requirements)
    return [
        label(reqs[i]) + (f" ({result.reason})" if result.reason else "") if i < len(reqs) else str(result)
        for i, result in enumerate(event.results)
        if result.failed
    ]


def _final_lines(event: FullValidationEvent, requirements: Sequence[Requirement]) -> list[str]:
    # On a natural end no requirement failed, so the results follow the requirements' order.
    names = [label(r) for r in requirements] if len(requirements) == len(event.results) else []
    names += [f"requirement {i + 1}" for i in range(len(names), len(event.results))]
    return [
        f"{name}: {'pass' if result else 'FAIL'}" + (f" ({result.reason})" if result.reason else "")
        for name, result in zip(names, event.results, strict=True)
    ]


def event_to_json(
    event: StreamEvent, *, elapsed: float, requirements: Sequence[Requirement] = ()
) -> dict[str, Any]:
    """One event as a JSON-ready dict: ``type`` (the event class), ``elapsed`` (seconds
    since the run started), then the event's fields. Validation results carry the
    ``requirement`` they belong to (its ``format_for_llm()`` text)."""
    data: dict[str, Any] = {"type": type(event).__name__, "elapsed": round(elapsed, 6)}
    data.update(attrs.asdict(event, filter=lambda a, _: a.name not in ("requirements", "results")))
    if isinstance(event, QuickCheckEvent):
        reqs = event.requirements or tuple(requirements)
        data["results"] = [
            _result_json(result, reqs[i] if i < len(reqs) else None) for i, result in enumerate(event.results)
        ]
    elif isinstance(event, FullValidationEvent):
        aligned = len(requirements) == len(event.results)
        data["results"] = [
            _result_json(result, requirements[i] if aligned else None)
            for i, result in enumerate(event.results)
        ]
    return data


def _result_json(
    result: PartialValidationResult | ValidationResult, requirement: Requirement | None
) -> dict[str, Any]:
    data: dict[str, Any] = {"requirement": None if requirement is None else requirement.format_for_llm()}
    data.update(attrs.asdict(result))
    return data


# -- one run ------------------------------------------------------------------------------


@attrs.define
class RunStats:
    """What a run did, collected from its events (the summary at the end)."""

    started_at: float = attrs.field(factory=time.perf_counter)
    first_chunk_at: float | None = None
    finished_at: float | None = None
    chunks: int = 0
    failures: list[str] = attrs.field(factory=list)
    """``"label (reason)"`` for every requirement that failed mid-stream."""
    final_passed: bool | None = None
    completed: bool = False
    error: BaseException | None = None
    deltas_received: int | None = None
    """Deltas the engine received from the generation (known once the run ends)."""
    deltas_total: int | None = None
    """How many deltas the generation had in store (the simulator only)."""
    cancelled: bool = False

    @property
    def time_to_first_chunk(self) -> float | None:
        """Seconds from the request to the first validated chunk."""
        return None if self.first_chunk_at is None else self.first_chunk_at - self.started_at

    @property
    def total_time(self) -> float:
        """Seconds from the request to the end of the run."""
        end = self.finished_at if self.finished_at is not None else time.perf_counter()
        return end - self.started_at

    @property
    def exit_code(self) -> int:
        """The process exit code this run deserves."""
        if self.error is not None:
            return exit_code_for(self.error)
        if self.failures or self.final_passed is False or not self.completed:
            return EXIT_CHECK_FAILED
        return EXIT_OK

    def summary_items(self) -> list[tuple[str, str]]:
        """The end-of-run summary as ``(name, value)`` pairs."""
        ttfc = self.time_to_first_chunk
        failures = f"{len(self.failures)}" + (f" ({'; '.join(self.failures)})" if self.failures else "")
        items = [("chunks delivered", str(self.chunks)), ("failed quick checks", failures)]
        if self.final_passed is not None:
            items.append(("final validation", "passed" if self.final_passed else "FAILED"))
        elif self.failures:
            items.append(("final validation", "skipped (the stream stopped early)"))
        if self.cancelled and self.deltas_received is not None:
            of_total = f" of {self.deltas_total}" if self.deltas_total else ""
            items.append(("generation", f"cancelled after {self.deltas_received}{of_total} tokens"))
        items.append(("time to first chunk", "-" if ttfc is None else f"{ttfc:.2f} s"))
        items.append(("total time", f"{self.total_time:.2f} s"))
        if isinstance(self.error, KeyboardInterrupt | asyncio.CancelledError):
            items.append(("error", "interrupted"))
        elif self.error is not None:
            items.append(("error", f"{type(self.error).__name__}: {self.error}"))
        return items

    def summary_lines(self) -> list[str]:
        """The end-of-run summary, one ``name: value`` fact a line."""
        return [f"{name}: {value}" for name, value in self.summary_items()]


class View:
    """Receives a run's events as they happen; subclasses print them in one style."""

    def start(self, title: str, requirements: Sequence[Requirement]) -> None:
        """The run is about to start."""

    def event(self, event: StreamEvent, stats: RunStats, piece: str | None) -> None:
        """One event; *piece* is the new text to show for a ``ChunkEvent`` (with its spacing)."""

    def finish(self, stats: RunStats) -> None:
        """The run has ended; *stats* is final."""


class _TextTracker:
    """Recovers the whitespace a chunker dropped, so printed text keeps the model's layout."""

    def __init__(self, received: Callable[[], str] | None, separator: str) -> None:
        self.received = received
        self.separator = separator
        self.pos = 0
        self.count = 0

    def piece(self, chunk: str) -> str:
        self.count += 1
        if self.received is not None:
            text = self.received()
            at = text.find(chunk, self.pos)
            if at >= 0:
                gap = text[self.pos : at] if self.count > 1 else ""
                self.pos = at + len(chunk)
                return gap + chunk
        return (self.separator if self.count > 1 else "") + chunk


async def run_once(
    action: Any,
    backend: Backend,
    requirements: Sequence[Requirement],
    chunking: str,
    view: View,
    *,
    title: str,
) -> RunStats:
    """Stream *action* on *backend* through the pipeline, showing it in *view*."""
    from engine.streaming import stream_with_chunking  # the assembly loads operators

    stats = RunStats()
    view.start(title, requirements)
    ended = False  # a CompletedEvent was shown
    try:
        result = await stream_with_chunking(
            action, backend, SimpleContext(), requirements=list(requirements) or None, chunking=chunking
        )
        mot = getattr(result, "mot", None)
        tracker = _TextTracker(
            (lambda: mot.text) if mot is not None else None,
            "\n\n" if chunking == "paragraph" else " ",
        )
        async for event in result.events():
            piece = None
            if isinstance(event, ChunkEvent):
                if stats.first_chunk_at is None:
                    stats.first_chunk_at = time.perf_counter()
                stats.chunks += 1
                piece = tracker.piece(event.text)
            elif isinstance(event, QuickCheckEvent) and not event.passed:
                stats.failures.extend(_failures(event, requirements))
            elif isinstance(event, FullValidationEvent):
                stats.final_passed = event.passed
            elif isinstance(event, CompletedEvent):
                stats.completed = event.success
                ended = True
            view.event(event, stats, piece)
        await result.acomplete()
    except Exception as exc:  # the run's error: reported by the view and the exit code
        stats.error = exc
        if not ended:  # it failed before the pipeline ran: end the event stream the usual way
            view.event(ErrorEvent(exception_type=type(exc).__name__, detail=str(exc)), stats, None)
            view.event(CompletedEvent(success=False, full_text=""), stats, None)
    except BaseException as exc:  # interrupted: still close the view, then propagate
        stats.error = exc
        raise
    finally:
        stats.finished_at = time.perf_counter()
        generations = getattr(backend, "generations", None)
        if generations:
            generation = generations[-1]
            stats.deltas_received = generation.deltas_received
            stats.cancelled = generation.cancelled
            deltas = getattr(backend, "deltas", None)
            stats.deltas_total = len(deltas) if isinstance(deltas, list) else None
        view.finish(stats)
    return stats


# -- views ----------------------------------------------------------------------------------


def _elapsed(event: StreamEvent, stats: RunStats) -> float:
    return time.perf_counter() - stats.started_at


class PlainTextView(View):
    """The validated text on *out* as it arrives; the summary on *err*."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err

    def event(self, event: StreamEvent, stats: RunStats, piece: str | None) -> None:
        if piece is not None:
            self.out.write(piece)
            self.out.flush()
        elif isinstance(event, CompletedEvent) and stats.chunks:
            self.out.write("\n")
            self.out.flush()

    def finish(self, stats: RunStats) -> None:
        for line in stats.summary_lines():
            print(f"-- {line}", file=self.err)


class EventLinesView(View):
    """One human-readable line per event (``--events``, and the demo without a terminal)."""

    def __init__(self, out: TextIO, *, indent: str = "", notes: bool = False) -> None:
        self.out = out
        self.indent = indent
        self.notes = notes
        self.requirements: Sequence[Requirement] = ()

    def _print(self, stats: RunStats, text: str) -> None:
        print(
            f"{self.indent}{time.perf_counter() - stats.started_at:6.2f}s  {text}", file=self.out, flush=True
        )

    def start(self, title: str, requirements: Sequence[Requirement]) -> None:
        self.requirements = requirements

    def event(self, event: StreamEvent, stats: RunStats, piece: str | None) -> None:
        pad = " " * len(f"{self.indent}{0:6.2f}s  ")
        match event:
            case QuickCheckEvent(chunk_index=index, passed=passed):
                verdicts = ", ".join(r.success for r in event.results)
                self._print(
                    stats, f"quick check  chunk {index}: {'passed' if passed else 'FAILED'}  [{verdicts}]"
                )
                if not passed:
                    for line in _quick_check_lines(event, self.requirements):
                        print(f"{pad}  {line}", file=self.out)
                if not passed and self.notes:
                    print(
                        f"{pad}  -> chunk {index} is withheld and the generation is cancelled now",
                        file=self.out,
                    )
            case ChunkEvent(chunk_index=index, text=text):
                self._print(stats, f"chunk {index:<6} {text!r}")
            case StreamingDoneEvent(full_text=text):
                self._print(stats, f"streaming done: {stats.chunks} chunks, {len(text)} characters")
            case FullValidationEvent(passed=passed):
                self._print(stats, f"final validation: {'passed' if passed else 'FAILED'}")
                for line in _final_lines(event, self.requirements):
                    print(f"{pad}  {line}", file=self.out)
            case ErrorEvent(exception_type=kind, detail=detail):
                self._print(stats, f"error: {kind}: {detail}")
            case CompletedEvent(success=success):
                self._print(stats, f"completed: success={success}")
            case _:
                self._print(stats, type(event).__name__)
        self.out.flush()

    def finish(self, stats: RunStats) -> None:
        for line in stats.summary_lines():
            print(f"{self.indent}  {line}", file=self.out)
        self.out.flush()


class JsonView(View):
    """One JSON object per event, one per line (``--json``)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.requirements: Sequence[Requirement] = ()

    def start(self, title: str, requirements: Sequence[Requirement]) -> None:
        self.requirements = requirements

    def event(self, event: StreamEvent, stats: RunStats, piece: str | None) -> None:
        data = event_to_json(event, elapsed=_elapsed(event, stats), requirements=self.requirements)
        self.out.write(json.dumps(data, ensure_ascii=False) + "\n")
        self.out.flush()


class LiveView(View):
    """The ``rich`` live view for a terminal: text as it arrives, quick checks, a spinner, a summary."""

    MAX_CHECK_LINES = 6

    def __init__(self, console: Console) -> None:
        self.console = console
        self.title = ""
        self.requirements: Sequence[Requirement] = ()
        self.text = ""
        self.checks: list[tuple[bool, str]] = []
        self.status = "waiting for the model..."
        self.stats: RunStats | None = None
        self.done = False
        self._live: Live | None = None
        self._ticker: asyncio.Task[None] | None = None

    def start(self, title: str, requirements: Sequence[Requirement]) -> None:
        from rich.live import Live

        self.title = title
        self.requirements = requirements
        # Transient: the live area (cropped to the terminal) is replaced by the full result at the end.
        self._live = Live(self._render(), console=self.console, auto_refresh=False, transient=True)
        self._live.start(refresh=True)
        # Refresh on the event loop (no rendering thread), so the spinner turns while waiting.
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.08)
            self._refresh()

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render(), refresh=True)

    def event(self, event: StreamEvent, stats: RunStats, piece: str | None) -> None:
        self.stats = stats
        match event:
            case QuickCheckEvent(chunk_index=index, passed=passed):
                if passed:
                    detail = " · ".join(r.success for r in event.results)
                else:
                    detail = "FAILED: " + "; ".join(_failures(event, self.requirements))
                self.checks.append((passed, f"chunk {index}: {detail}"))
                self.status = "checking the next chunk..." if passed else "a check failed: cancelling"
            case ChunkEvent():
                self.text += piece or ""
                self.status = "model is thinking..."
            case StreamingDoneEvent():
                self.status = "final validation..."
            case FullValidationEvent():
                self.status = "final validation done"
            case ErrorEvent(exception_type=kind, detail=detail):
                self.checks.append((False, f"error: {kind}: {detail}"))
            case _:
                pass
        self._refresh()

    def finish(self, stats: RunStats) -> None:
        self.stats = stats
        self.done = True
        if self._ticker is not None:
            self._ticker.cancel()
        if self._live is not None:
            self._live.stop()
            self._live = None
        self.console.print(self._render())

    def _text_tail(self, room: int) -> str:
        """The end of the text, at most *room* screen lines of it, so the live area fits the terminal."""
        import textwrap

        width = max(self.console.size.width - 4, 10)
        lines: list[str] = []
        for paragraph in self.text.split("\n"):
            lines.extend(textwrap.wrap(paragraph, width) or [""])
        if len(lines) <= room:
            return self.text
        return "\n".join(["...", *lines[-(room - 1) :]])

    def _render(self) -> RenderableType:
        from rich.console import Group
        from rich.panel import Panel
        from rich.spinner import Spinner
        from rich.table import Table
        from rich.text import Text

        text = self.text
        if not self.done:
            checks = min(len(self.checks), self.MAX_CHECK_LINES + 1)
            text = self._text_tail(max(self.console.size.height - checks - 6, 3))
        parts: list[RenderableType] = [
            Panel(Text(text or " "), title=self.title, title_align="left", border_style="cyan")
        ]
        shown = self.checks[-self.MAX_CHECK_LINES :]
        if len(self.checks) > len(shown):
            parts.append(Text(f"  ... {len(self.checks) - len(shown)} earlier quick checks", style="dim"))
        for passed, line in shown:
            parts.append(Text(("  ✓ " if passed else "  ✗ ") + line, style="green" if passed else "bold red"))
        if self.requirements and not self.done:
            names = " · ".join(label(r) for r in self.requirements)
            parts.insert(1, Text(f"  quick checks, in order: {names}", style="dim"))
        if not self.done:
            parts.append(Spinner("dots", text=Text(self.status, style="yellow")))
        elif self.stats is not None:
            table = Table(show_header=False, box=None, padding=(0, 2))
            for name, value in self.stats.summary_items():
                style = "bold red" if ("FAIL" in value or name == "error") else None
                table.add_row(name, Text(value, style=style or ""))
            ok = self.stats.exit_code == EXIT_OK
            parts.append(
                Panel(table, title="summary", title_align="left", border_style="green" if ok else "red")
            )
        return Group(*parts)


# -- errors -----------------------------------------------------------------------------------


def exit_code_for(error: BaseException) -> int:
    """The exit code for an error that stopped a run."""
    if isinstance(error, KeyboardInterrupt | asyncio.CancelledError):
        return EXIT_INTERRUPTED
    try:
        from backends.errors import BackendUnreachableError, ConnectTimeoutError, ModelNotFoundError
    except ImportError:  # pragma: no cover - backends ship with the engine
        return EXIT_BACKEND_ERROR
    if isinstance(error, BackendUnreachableError | ConnectTimeoutError):
        return EXIT_UNREACHABLE
    if isinstance(error, ModelNotFoundError):
        return EXIT_MODEL_MISSING
    return EXIT_BACKEND_ERROR


def _hint(error: BaseException, backend_name: str, model: str) -> str | None:
    code = exit_code_for(error)
    if code == EXIT_UNREACHABLE:
        start = "start it with `ollama serve`" if backend_name == "ollama" else "start your server"
        return (
            f"hint: {start}, or point --base-url at it; `rxllm demo` runs without any server, "
            "and `--backend scripted` replays a canned answer"
        )
    if code == EXIT_MODEL_MISSING:
        if backend_name == "ollama":
            return f"hint: download the model with `ollama pull {model}`, or choose another with --model"
        return "hint: choose a model the server serves with --model"
    return None


# -- commands -----------------------------------------------------------------------------------


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text}")
    return value


def _base_url(text: str) -> str:
    if not re.match(r"https?://[^/\s]+", text):
        raise argparse.ArgumentTypeError(
            f"expected an http:// or https:// URL such as http://localhost:11434, got {text!r}"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``rxllm``."""
    parser = argparse.ArgumentParser(
        prog="rxllm",
        description="Stream LLM output through reactive pipelines with per-chunk validation.",
        epilog="Start with `rxllm demo` (no model server needed).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        help="run the pipeline on the built-in simulator, twice (passing, then failing mid-stream)",
        description="Replay a canned answer through stream_with_chunking with ready-made requirements: "
        "once passing, once with a check that fails mid-stream. Needs no model server.",
    )
    demo.add_argument(
        "--delay",
        type=_seconds,
        default=DEMO_DELAY,
        metavar="SECONDS",
        help=f"seconds between simulated tokens (default {DEMO_DELAY})",
    )
    _add_output_flags(demo)

    stream = commands.add_parser(
        "stream",
        help="stream a prompt from a model server with per-chunk validation",
        description="Stream PROMPT from a model server, validating each chunk as it arrives; "
        "the first failing check cancels the generation.",
        epilog="exit codes: 0 passed; 1 a requirement failed; 2 bad command line; "
        "3 server unreachable; 4 model not on the server; 5 other server error; 130 interrupted",
    )
    stream.add_argument("prompt", metavar="PROMPT", help="what to ask the model")
    stream.add_argument(
        "--backend",
        choices=("ollama", "openai", "scripted"),
        default="ollama",
        help="ollama (default), openai (any OpenAI-compatible server), or scripted (a simulator, no server)",
    )
    stream.add_argument(
        "--model",
        help=f"model name (default: $RXLLM_MODEL, else {DEFAULT_OLLAMA_MODEL} for ollama; "
        "openai needs one, e.g. gpt-4o-mini)",
    )
    stream.add_argument(
        "--base-url",
        type=_base_url,
        help="server URL (default: $OLLAMA_HOST or http://localhost:11434 for ollama; "
        "$OPENAI_BASE_URL or the OpenAI API for openai)",
    )
    stream.add_argument("--api-key", help="API key for --backend openai (default: $OPENAI_API_KEY)")
    stream.add_argument(
        "--chunking", choices=("sentence", "word", "paragraph"), default="sentence", help="unit of validation"
    )
    stream.add_argument("--max-sentences", type=_nonnegative_int, metavar="N", help="fail after N sentences")
    stream.add_argument("--max-words", type=_nonnegative_int, metavar="N", help="fail after N words")
    stream.add_argument("--max-chars", type=_nonnegative_int, metavar="N", help="fail after N characters")
    stream.add_argument(
        "--forbid",
        nargs="+",
        action="extend",
        default=[],
        metavar="WORD",
        help="fail on any of these words (whole words, any case); repeatable",
    )
    stream.add_argument(
        "--regex",
        action="append",
        default=[],
        metavar="PATTERN",
        help="fail when a chunk matches; repeatable",
    )
    stream.add_argument(
        "--script",
        metavar="FILE",
        help="with --backend scripted: the text to replay ('-' reads standard input; "
        "default: a canned answer)",
    )
    stream.add_argument(
        "--delay",
        type=_seconds,
        default=0.02,
        metavar="SECONDS",
        help="with --backend scripted: seconds between tokens (default 0.02)",
    )
    _add_output_flags(stream)
    return parser


def _add_output_flags(command: argparse.ArgumentParser) -> None:
    output = command.add_mutually_exclusive_group()
    output.add_argument("--events", action="store_true", help="print one line per event")
    output.add_argument("--json", action="store_true", help="print one JSON object per event, one per line")
    output.add_argument("--plain", action="store_true", help="plain output even on a terminal")


def requirements_from_args(args: argparse.Namespace) -> list[Requirement]:
    """The requirements the ``stream`` flags ask for (``ValueError`` on a bad pattern)."""
    reqs: list[Requirement] = []
    if args.max_sentences is not None:
        reqs.append(MaxSentences(args.max_sentences))
    if args.max_words is not None:
        reqs.append(MaxWords(args.max_words))
    if args.max_chars is not None:
        reqs.append(MaxCharacters(args.max_chars))
    if args.forbid:
        reqs.append(ForbiddenWords(args.forbid))
    reqs.extend(MustNotMatch(pattern) for pattern in args.regex)
    return reqs


def _make_view(args: argparse.Namespace, out: TextIO, err: TextIO, *, demo: bool) -> View:
    if args.json:
        return JsonView(out)
    if args.events:
        return EventLinesView(out, indent="  " if demo else "", notes=demo)
    if not args.plain and out.isatty():
        from rich.console import Console

        return LiveView(Console(file=out))
    if demo:
        return EventLinesView(out, indent="  ", notes=True)
    return PlainTextView(out, err)


def _build_backend(args: argparse.Namespace, model: str, err: TextIO) -> Backend:
    if args.backend == "scripted":
        from backends.scripted import ScriptedBackend

        if args.script is None:
            text = DEMO_ANSWER
        elif args.script == "-":
            text = sys.stdin.read()
        else:
            with open(args.script, encoding="utf-8") as file:
                text = file.read()
        return ScriptedBackend(tokenize(text), delay=args.delay, model_id=model)
    if args.backend == "ollama":
        from backends.ollama import OllamaBackend

        return OllamaBackend(model, base_url=args.base_url)
    from backends.openai import OpenAIBackend

    return OpenAIBackend(model, base_url=args.base_url, api_key=args.api_key)


async def _close(backend: object) -> None:
    aclose = getattr(backend, "aclose", None)
    if aclose is not None:
        await aclose()


async def stream_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``rxllm stream``: one run against the chosen backend."""
    model = args.model or os.environ.get("RXLLM_MODEL") or DEFAULT_MODELS[args.backend]
    reqs = requirements_from_args(args)
    backend = _build_backend(args, model, err)
    try:
        where = getattr(backend, "base_url", None) or "simulator"
        title = f"{args.backend} · {model} · {where} · {args.chunking} chunks"
        view = _make_view(args, out, err, demo=False)
        stats = await run_once(
            _instruction(args.prompt, reqs),
            backend,
            reqs,
            args.chunking,
            view,
            title=title,
        )
    finally:
        await _close(backend)
    if stats.error is not None:
        print(f"rxllm: {type(stats.error).__name__}: {stats.error}", file=err)
        hint = _hint(stats.error, args.backend, model)
        if hint:
            print(hint, file=err)
    return stats.exit_code


def _demo_intro(delay: float) -> str:
    return f"""\
rxllm demo: streaming with per-chunk validation, early cancellation and typed events

The model here is a SIMULATOR (ScriptedBackend): it replays a canned answer, one
token every {delay * 1000:.0f} ms, so no model server is needed. Each run goes through
stream_with_chunking: the text is cut into sentences, every sentence is checked by
all requirements in parallel (the "quick checks") before you see it, and the first
failing check cancels the generation at once.

To stream from a real model instead:
  rxllm stream "Why is the sky blue?" --backend ollama --model {DEFAULT_OLLAMA_MODEL}
  rxllm stream "Why is the sky blue?" --backend openai --base-url http://localhost:8000/v1 --model M
"""


def _instruction(prompt: str, requirements: Sequence[Requirement]) -> Instruction:
    """The action to generate: the prompt, with the requirements rendered for the model."""
    # (cast: mypy's attrs plugin types the converter=tuple field as an unsolved Iterable[_T_co].)
    return Instruction(prompt, requirements=cast(Any, tuple(requirements)))


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

    view = _make_view(args, out, err, demo=True)
    json_mode = isinstance(view, JsonView)

    def write(text: str) -> None:
        # In --json mode standard output carries only events.
        if not json_mode:
            print(text, file=out, flush=True)

    write(_demo_intro(args.delay))
    write(f"Prompt: {DEMO_PROMPT}\n")
    codes = []
    for title, reqs in demo_runs():
        write(title)
        write("  requirements (quick-check verdicts are listed in this order):")
        for number, requirement in enumerate(reqs, 1):
            write(f"    {number}. {label(requirement)}")
        backend = ScriptedBackend(tokenize(DEMO_ANSWER), delay=args.delay, model_id="simulator")
        view = _make_view(args, out, err, demo=True)
        stats = await run_once(_instruction(DEMO_PROMPT, reqs), backend, reqs, "sentence", view, title=title)
        codes.append(stats.exit_code)
        write("")
    write(
        "What happened: run 1 delivered every sentence, then ran the final validation on the whole\n"
        "answer. In run 2 the fifth sentence failed its quick check: it was never shown, the\n"
        "generation was cancelled mid-answer (see 'generation: cancelled after N of M tokens'), and\n"
        "there was no final validation. Next: `rxllm stream --help`, and README.md for the Python API."
    )
    # The demo succeeds when run 1 passed and run 2 stopped on its check, as intended.
    return EXIT_OK if codes == [EXIT_OK, EXIT_CHECK_FAILED] else EXIT_BACKEND_ERROR


def _preload(backend_name: str, *, live: bool) -> None:
    """Import what the run needs before the event loop starts, so no import blocks the loop."""
    import importlib

    importlib.import_module("engine.streaming")
    importlib.import_module(f"backends.{backend_name}")
    if live:
        importlib.import_module("rich.live")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rxllm`` console script and ``python -m engine``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    out, err = sys.stdout, sys.stderr
    if args.command == "stream":
        if args.script is not None and args.backend != "scripted":
            parser.error("--script only works with --backend scripted")
        try:
            requirements_from_args(args)
        except (ValueError, TypeError) as exc:
            parser.error(str(exc))
        if args.backend == "openai" and not (args.model or os.environ.get("RXLLM_MODEL")):
            parser.error("--backend openai needs --model: the name the server serves, e.g. gpt-4o-mini")
        if args.script not in (None, "-") and not os.path.isfile(args.script):
            parser.error(f"--script {args.script!r}: no such file")
        command = stream_command
    else:
        command = demo_command
    _preload(args.backend if args.command == "stream" else "scripted", live=not args.plain and out.isatty())
    try:
        return asyncio.run(command(args, out, err))
    except KeyboardInterrupt:
        print("rxllm: interrupted", file=err)
        return EXIT_INTERRUPTED
    except (ValueError, TypeError) as exc:  # a backend rejecting its arguments
        print(f"rxllm: {exc}", file=err)
        return EXIT_USAGE
    finally:
        with contextlib.suppress(Exception):
            out.flush()
