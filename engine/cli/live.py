"""The live view for a terminal (``rich``): text as it arrives, quick checks, a spinner, a summary."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

from engine.cli import labels
from engine.cli.errors import EXIT_OK
from engine.cli.view import View
from engine.core.events import (
    ChunkEvent,
    ErrorEvent,
    FullValidationEvent,
    QuickCheckEvent,
    RetryEvent,
    StreamEvent,
    StreamingDoneEvent,
)

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live
    from rich.spinner import Spinner

    from engine.cli.stats import RunStats
    from engine.core.requirements import Requirement

__all__ = ["LiveView"]


class LiveView(View):
    """The ``rich`` live view. ``rich``'s refresh thread redraws it a few times a second; the event
    loop only records what happened, so drawing (milliseconds per redraw, more when a terminal
    is slow to take the output) never holds up the validators or the cancellation of a failed
    run: a terminal run stops the generation as early as a piped one."""

    MAX_CHECK_LINES = 6
    REFRESH_PER_SECOND = 12.5

    def __init__(self, console: Console) -> None:
        self.console = console
        self.title = ""
        self.text = ""
        self.checks: list[tuple[bool, str]] = []
        self.phase = "streaming"
        self.done = False
        self._live: Live | None = None
        self._spinner: Spinner | None = None

    def start(self, title: str, requirements: Sequence[Requirement], stats: RunStats) -> None:
        from rich.live import Live
        from rich.spinner import Spinner

        super().start(title, requirements, stats)
        self.title = title
        self._spinner = Spinner("dots", style="yellow")  # one spinner, so it turns from redraw to redraw
        # Transient: the live area (cropped to the terminal) is replaced by the full result at the end.
        self._live = Live(
            get_renderable=self._render,
            console=self.console,
            auto_refresh=True,
            refresh_per_second=self.REFRESH_PER_SECOND,
            transient=True,
        )
        self._live.start(refresh=True)

    def event(self, event: StreamEvent, piece: str | None) -> None:
        # Only bookkeeping: the refresh thread draws (see the class docstring).
        match event:
            case QuickCheckEvent(chunk_index=index, passed=passed):
                if passed:
                    detail = " · ".join(r.success for r in event.results)
                else:
                    detail = "FAILED: " + "; ".join(labels.failures(event, self.requirements))
                    self.phase = "failed"
                self.checks.append((passed, f"chunk {index}: {detail}"))
            case ChunkEvent():
                self.text += piece or ""
            case StreamingDoneEvent():
                self.phase = "final validation"
            case FullValidationEvent():
                self.phase = "done"
            case RetryEvent(attempt=attempt, reason=reason):
                self.checks.append((True, f"retry: attempt {attempt} continues the answer ({reason})"))
                self.phase = "streaming"
            case ErrorEvent(exception_type=kind):
                self.checks.append((False, f"error: {kind}"))
            case _:
                pass

    def finish(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        self.done = True
        if not self.stats.before_output:  # else the error's own line says all there is
            self.console.print(self._render())

    def status(self) -> str:
        """The spinner's line: what the run is waiting for now."""
        if self.phase == "failed":
            return "a check failed: cancelling"
        if self.phase == "final validation":
            return "final validation..."
        if self.phase == "done":
            return "final validation done"
        tokens = self.stats.tokens
        if not tokens:
            return "waiting for the model..."
        which = "first" if self.stats.chunks == 0 else "next"
        return f"waiting for the {which} {self.stats.chunking}... ({tokens} tokens so far)"

    def _text_tail(self, room: int) -> str:
        """The end of the text, at most *room* screen lines of it, so the live area fits the terminal."""
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
            names = " · ".join(r.label for r in self.requirements)
            parts.insert(1, Text(f"  quick checks, in order: {names}", style="dim"))
        if not self.done and self._spinner is not None:
            self._spinner.update(text=Text(self.status(), style="yellow"))
            parts.append(self._spinner)
        else:
            table = Table(show_header=False, box=None, padding=(0, 2))
            for name, value in self.stats.summary_items():
                style = "bold red" if "FAIL" in value else None
                table.add_row(name, Text(value, style=style or ""))
            ok = self.stats.exit_code == EXIT_OK
            parts.append(
                Panel(table, title="summary", title_align="left", border_style="green" if ok else "red")
            )
        return Group(*parts)
