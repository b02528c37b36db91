"""The plain view: the validated text on standard output, the summary on standard error."""

from __future__ import annotations

from typing import TextIO

from engine.cli.view import View, write
from engine.core.events import CompletedEvent, StreamEvent

__all__ = ["PlainTextView"]


class PlainTextView(View):
    """The validated text on *out* as it arrives; the summary on *err*."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err

    def event(self, event: StreamEvent, piece: str | None) -> None:
        if piece is not None:
            write(self.out, piece)
        elif isinstance(event, CompletedEvent) and self.stats.chunks:
            write(self.out, "\n")

    def finish(self) -> None:
        if self.stats.before_output:  # the error's own line says all there is
            return
        write(self.err, "".join(f"-- {line}\n" for line in self.stats.summary_lines()))
