"""What a run did: :class:`RunStats`, collected from its events, and the summary at the end."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from engine.cli.errors import EXIT_CHECK_FAILED, EXIT_OK, exit_code_for

if TYPE_CHECKING:
    from engine.core.generation import GenerationInfo

__all__ = ["RunStats"]


def _once_each(items: Sequence[str]) -> str:
    """*items* joined with ``; ``, each said once, with how often where more than once."""
    counts = Counter(items)
    return "; ".join(item if counts[item] == 1 else f"{item}, {counts[item]} times" for item in counts)


@attrs.define
class RunStats:
    """What a run did, collected from its events (the summary at the end)."""

    chunking: str = "sentence"
    """The unit of validation (``sentence``, ``word``, ``paragraph``)."""
    started_at: float = attrs.field(factory=time.perf_counter)
    first_chunk_at: float | None = None
    finished_at: float | None = None
    chunks: int = 0
    failures: list[str] = attrs.field(factory=list)
    """``"label (reason)"`` for every requirement that failed mid-stream."""
    final_passed: bool | None = None
    final_failures: list[str] = attrs.field(factory=list)
    """``"label (reason)"`` for every requirement that failed the final validation."""
    completed: bool = False
    error: BaseException | None = None
    generation: GenerationInfo | None = None
    """The run's own generation record, once the request is sent; after a retry, the latest
    attempt's (``result.mots[-1].generation``)."""
    script_length: int | None = None
    """How many deltas the simulator had in store (``--backend scripted`` and the demo), until a
    retry's generation takes over."""
    retries: list[str] = attrs.field(factory=list)
    """The reason of every in-stream retry (``--retries``), in order."""

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
    def tokens(self) -> int:
        """Deltas received from the generation so far."""
        return 0 if self.generation is None else self.generation.deltas_received

    @property
    def exit_code(self) -> int:
        """The process exit code this run deserves."""
        if self.error is not None:
            return exit_code_for(self.error)
        # A failure a retry repaired (it is in ``failures``) does not fail the run: the run's end says.
        if self.final_passed is False or not self.completed:
            return EXIT_CHECK_FAILED
        return EXIT_OK

    @property
    def before_output(self) -> bool:
        """Whether the run ended on an error before showing anything (no chunk, no check): the
        error's own line then says all there is, and views print no summary of nothing."""
        return self.error is not None and not self.chunks and not self.failures

    def summary_items(self) -> list[tuple[str, str]]:
        """The end-of-run summary as ``(name, value)`` pairs.

        Each reason is told once: a failure repeated by retries is counted, not repeated, and a
        retry's reason is the quick-check failure already listed. The error that stopped the run
        is not an item: it is told once, on its own line, after the summary."""
        ttfc = self.time_to_first_chunk
        failures = f"{len(self.failures)}" + (f" ({_once_each(self.failures)})" if self.failures else "")
        items = [("chunks delivered", str(self.chunks)), ("failed quick checks", failures)]
        if self.retries:
            items.append(("retries", str(len(self.retries))))
        if self.final_passed is not None:
            failed = f"FAILED ({_once_each(self.final_failures)})" if self.final_failures else "FAILED"
            items.append(("final validation", "passed" if self.final_passed else failed))
        elif self.failures:
            items.append(("final validation", "skipped (the stream stopped early)"))
        generation = self.generation
        if generation is not None and generation.cancelled:
            of_total = f" of {self.script_length}" if self.script_length else ""
            items.append(("generation", f"cancelled after {generation.deltas_received}{of_total} tokens"))
        items.append(("time to first chunk", "-" if ttfc is None else f"{ttfc:.2f} s"))
        items.append(("total time", f"{self.total_time:.2f} s"))
        return items

    def summary_lines(self) -> list[str]:
        """The end-of-run summary, one ``name: value`` fact a line."""
        return [f"{name}: {value}" for name, value in self.summary_items()]
