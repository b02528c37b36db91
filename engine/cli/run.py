"""One run of the pipeline for the command: ``stream_with_chunking``, its events shown by a view,
and the statistics of the summary at the end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from engine.cli import labels
from engine.cli.errors import EXIT_CHECK_FAILED, EXIT_OK, exit_code_for
from engine.core.components import Instruction
from engine.core.context import SimpleContext
from engine.core.events import (
    ChunkEvent,
    CompletedEvent,
    ErrorEvent,
    FullValidationEvent,
    QuickCheckEvent,
    RetryEvent,
)
from engine.core.requirements import Requirement

if TYPE_CHECKING:
    from engine.cli.view import View
    from engine.core.backend import Backend
    from engine.core.continuation import StreamRetry
    from engine.core.thunk import GenerationInfo
    from engine.streaming import StreamChunkingResult

__all__ = ["OutputClosed", "RunStats", "TextTracker", "instruction", "run_once"]


class OutputClosed(Exception):
    """The reader of standard output went away (``rxllm stream ... | head``)."""


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

    def summary_items(self) -> list[tuple[str, str]]:
        """The end-of-run summary as ``(name, value)`` pairs."""
        ttfc = self.time_to_first_chunk
        failures = f"{len(self.failures)}" + (f" ({'; '.join(self.failures)})" if self.failures else "")
        items = [("chunks delivered", str(self.chunks)), ("failed quick checks", failures)]
        if self.retries:
            items.append(("retries", f"{len(self.retries)} ({'; '.join(self.retries)})"))
        if self.final_passed is not None:
            failed = f"FAILED ({'; '.join(self.final_failures)})" if self.final_failures else "FAILED"
            items.append(("final validation", "passed" if self.final_passed else failed))
        elif self.failures:
            items.append(("final validation", "skipped (the stream stopped early)"))
        generation = self.generation
        if generation is not None and generation.cancelled:
            of_total = f" of {self.script_length}" if self.script_length else ""
            items.append(("generation", f"cancelled after {generation.deltas_received}{of_total} tokens"))
        items.append(("time to first chunk", "-" if ttfc is None else f"{ttfc:.2f} s"))
        items.append(("total time", f"{self.total_time:.2f} s"))
        if isinstance(self.error, KeyboardInterrupt | asyncio.CancelledError):
            items.append(("error", "interrupted"))
        elif self.error is not None:  # the message itself is printed once, after the summary
            items.append(("error", type(self.error).__name__))
        return items

    def summary_lines(self) -> list[str]:
        """The end-of-run summary, one ``name: value`` fact a line."""
        return [f"{name}: {value}" for name, value in self.summary_items()]


class TextTracker:
    """Recovers the whitespace a chunker dropped, so printed text keeps the model's layout."""

    def __init__(self, mot: Any, separator: str) -> None:
        self.mot = mot
        self.separator = separator
        self.pos = 0
        self.count = 0

    def follow(self, mot: Any) -> None:
        """Go on in *mot*, a retry's generation, which continues the text shown so far."""
        self.mot, self.pos = mot, 0

    def piece(self, chunk: str) -> str:
        """*chunk* with the whitespace that preceded it in the model's text."""
        self.count += 1
        text: str = self.mot.text
        at = text.find(chunk, self.pos)
        if at >= 0:
            gap = text[self.pos : at] if self.count > 1 else ""
            self.pos = at + len(chunk)
            return gap + chunk
        return (self.separator if self.count > 1 else "") + chunk


def instruction(prompt: str, requirements: Sequence[Requirement]) -> Instruction:
    """The action to generate: the prompt, with the requirements rendered for the model."""
    return Instruction(prompt, requirements=tuple(requirements))


async def run_once(
    action: Any,
    backend: Backend,
    requirements: Sequence[Requirement],
    chunking: str,
    view: View,
    *,
    title: str,
    script_length: int | None = None,
    retry: StreamRetry | None = None,
) -> RunStats:
    """Stream *action* on *backend* through the pipeline, showing it in *view*.

    Raises :class:`OutputClosed` (after stopping the run) when the view's output was closed.
    """
    from engine.streaming import stream_with_chunking  # the assembly loads operators
    from operators.chunking import resolve_chunking_strategy

    stats = RunStats(chunking=chunking, script_length=script_length)
    view.start(title, requirements, stats)
    ended = False  # a CompletedEvent was shown
    closed = False  # the output's reader went away: nothing more is shown
    result: StreamChunkingResult | None = None
    try:
        result = await stream_with_chunking(
            action,
            backend,
            SimpleContext(),
            requirements=list(requirements) or None,
            chunking=chunking,
            retry=retry,
        )
        stats.generation = result.mot.generation
        tracker = TextTracker(result.mot, resolve_chunking_strategy(chunking).separator)
        async for event in result.events():
            piece = None
            if isinstance(event, ChunkEvent):
                if stats.first_chunk_at is None:
                    stats.first_chunk_at = time.perf_counter()
                stats.chunks += 1
                if tracker.mot is not result.mots[-1]:  # a retry's generation continues the text
                    tracker.follow(result.mots[-1])
                    stats.generation = result.mots[-1].generation
                    stats.script_length = None  # the simulator's script was the first attempt's
                piece = tracker.piece(event.text)
            elif isinstance(event, RetryEvent):
                stats.retries.append(event.reason)
            elif isinstance(event, QuickCheckEvent) and not event.passed:
                stats.failures.extend(labels.failures(event, requirements))
            elif isinstance(event, FullValidationEvent):
                stats.final_passed = event.passed
                stats.final_failures = labels.final_failures(event, requirements)
            elif isinstance(event, CompletedEvent):
                stats.completed = event.success
                ended = True
            view.event(event, piece)
        await result.acomplete()
    except OutputClosed:
        closed = True
        if result is not None:  # stop the generation with it; its connection is closed
            await result.aclose()
        raise
    except Exception as exc:  # the run's error: reported by the view and the exit code
        stats.error = exc
        if not ended:  # it failed before the pipeline ran: end the event stream the usual way
            view.event(ErrorEvent(exception_type=type(exc).__name__, detail=str(exc)), None)
            view.event(CompletedEvent(success=False, full_text=""), None)
    except BaseException as exc:  # interrupted: still close the view, then propagate
        stats.error = exc
        raise
    finally:
        stats.finished_at = time.perf_counter()
        if not closed:
            view.finish()
    return stats
