"""``--events``: one human-readable line per event (also the demo's view without a terminal)."""

from __future__ import annotations

import time
from typing import TextIO

from engine.cli import labels
from engine.cli.view import View, write
from engine.core.events import (
    ChunkEvent,
    CompletedEvent,
    ErrorEvent,
    FullValidationEvent,
    QuickCheckEvent,
    RetryEvent,
    StreamEvent,
    StreamingDoneEvent,
)

__all__ = ["EventLinesView"]


class EventLinesView(View):
    """One line per event, with the seconds since the run started; *notes* explain a failure."""

    def __init__(self, out: TextIO, *, indent: str = "", notes: bool = False) -> None:
        self.out = out
        self.indent = indent
        self.notes = notes

    def _line(self, text: str) -> str:
        return f"{self.indent}{time.perf_counter() - self.stats.started_at:6.2f}s  {text}\n"

    def event(self, event: StreamEvent, piece: str | None) -> None:
        pad = " " * len(f"{self.indent}{0:6.2f}s  ") + "  "
        lines: list[str] = []
        match event:
            case QuickCheckEvent(chunk_index=index, passed=passed):
                verdicts = ", ".join(r.success for r in event.results)
                outcome = "passed" if passed else "FAILED"
                lines.append(self._line(f"quick check  chunk {index}: {outcome}  [{verdicts}]"))
                if not passed:
                    lines += [f"{pad}{line}\n" for line in labels.quick_check_lines(event, self.requirements)]
                if not passed and self.notes:
                    lines.append(f"{pad}-> chunk {index} is withheld and the generation is cancelled now\n")
            case RetryEvent(attempt=attempt, reason=reason):
                lines.append(self._line(f"retry        attempt {attempt}: {reason}"))
                if self.notes:
                    lines.append(
                        f"{pad}-> a new generation continues the answer from the text shown so far\n"
                    )
            case ChunkEvent(chunk_index=index, text=text):
                lines.append(self._line(f"chunk {index:<6} {text!r}"))
            case StreamingDoneEvent(full_text=text):
                done = f"streaming done: {self.stats.chunks} chunks, {len(text)} characters"
                lines.append(self._line(done))
            case FullValidationEvent(passed=passed):
                lines.append(self._line(f"final validation: {'passed' if passed else 'FAILED'}"))
                lines += [f"{pad}{line}\n" for line in labels.final_lines(event, self.requirements)]
            case ErrorEvent(exception_type=kind):
                # The message itself is printed once, on standard error, when the run ends.
                lines.append(self._line(f"error: {kind}"))
            case CompletedEvent(success=success):
                lines.append(self._line(f"completed: success={success}"))
            case _:
                lines.append(self._line(type(event).__name__))
        write(self.out, "".join(lines))

    def finish(self) -> None:
        if self.stats.before_output:  # the error's own line says all there is
            return
        write(self.out, "".join(f"{self.indent}  {line}\n" for line in self.stats.summary_lines()))
