"""One run of the pipeline for the command: ``stream_with_chunking``, its events shown by a view
and counted in a :class:`~engine.cli.stats.RunStats`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from engine.cli import labels
from engine.cli.stats import RunStats
from engine.cli.view import OutputClosed, View
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
from engine.text_layout import TextTracker

if TYPE_CHECKING:
    from engine.core.backend import Backend
    from engine.core.continuation import StreamRetry
    from engine.result import StreamChunkingResult

__all__ = ["TextTracker", "instruction", "run_once"]


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
    validation_timeout: float | None = None,
) -> RunStats:
    """Stream *action* on *backend* through the pipeline, showing it in *view*.

    *retry* and *validation_timeout* go to ``stream_with_chunking``. Raises
    :class:`~engine.cli.view.OutputClosed` (after stopping the run) when the view's output was closed.
    """
    from engine.assembly import stream_with_chunking  # the assembly loads operators
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
            validation_timeout=validation_timeout,
        )
        stats.generation = result.mot.generation
        tracker = TextTracker(result.mot, resolve_chunking_strategy(chunking).separator)
        async for event in result.events():
            piece = None
            if tracker.mot is not result.mots[-1]:  # a retry's generation continues the text
                tracker.follow(result.mots[-1])
                stats.generation = result.mots[-1].generation
                stats.script_length = None  # the simulator's script was the first attempt's
            if isinstance(event, ChunkEvent):
                if stats.first_chunk_at is None:
                    stats.first_chunk_at = time.perf_counter()
                stats.chunks += 1
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
