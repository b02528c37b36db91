"""What every view of a run implements, and writing that notices a closed pipe."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from engine.cli.stats import RunStats
    from engine.core.events import StreamEvent
    from engine.core.requirements import Requirement

__all__ = ["OutputClosed", "View", "write"]


class OutputClosed(Exception):
    """The reader of standard output went away (``rxllm stream ... | head``)."""


def write(stream: TextIO, text: str) -> None:
    """Write *text* and flush; :class:`OutputClosed` if the reader has gone (``| head``)."""
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        raise OutputClosed(stream) from None


class View:
    """Receives a run's events as they happen; subclasses print them in one style."""

    stats: RunStats
    requirements: Sequence[Requirement] = ()

    def start(self, title: str, requirements: Sequence[Requirement], stats: RunStats) -> None:
        """The run is about to start; *stats* fills in as it goes."""
        self.requirements = requirements
        self.stats = stats

    def event(self, event: StreamEvent, piece: str | None) -> None:
        """One event; *piece* is the new text to show for a ``ChunkEvent`` (with its spacing)."""

    def finish(self) -> None:
        """The run has ended; ``self.stats`` is final."""
