"""``stream_with_chunking``: the assembly of the streaming pipeline, and its result.

::

    thunk deltas ─► chunk(strategy) ─► validate(reqs) ─► cancel_on_fail()
                 ─► final_validation(reqs) ─► to_events()  ═► StreamChunkingResult

The source is the thunk's ``owned_deltas()``, so whenever the pipeline is
disposed (a "fail" completes it early, an error, an external cancel) the
generation is cancelled in the same call.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Sequence
from typing import Any

import attrs
from reactivex import Observable

from engine.core.asyncrx import ReplayLog, iterate
from engine.core.backend import Backend
from engine.core.context import Context
from engine.core.events import ChunkEvent, CompletedEvent, FullValidationEvent, QuickCheckEvent, StreamEvent
from engine.core.options import ModelOption
from engine.core.requirements import PartialValidationResult, Requirement, ValidationResult, as_requirements
from engine.core.thunk import ModelOutputThunk
from operators.cancel_on_fail import cancel_on_fail
from operators.chunk import chunk
from operators.chunking import ChunkingStrategy, resolve_chunking_strategy
from operators.final_validation import final_validation
from operators.to_events import to_events
from operators.validate import validate

__all__ = ["StreamChunkingResult", "stream_with_chunking"]


async def stream_with_chunking(
    action: Any,
    backend: Backend,
    ctx: Context,
    *,
    requirements: Sequence[Requirement] | None = None,
    chunking: str | ChunkingStrategy = "sentence",
    validation_backend: Backend | None = None,
) -> StreamChunkingResult:
    """Generate a streaming response with per-chunk validation.

    Starts a streaming generation of *action* on *backend*, cuts the output into
    chunks (``"sentence"``, ``"word"``, ``"paragraph"`` or a strategy instance), and
    runs every requirement's ``stream_validate`` on each chunk in parallel, chunks
    in order. The first "fail" cancels the generation at once; the failing chunk is
    never delivered. On a natural end the withheld trailing fragment is flushed and
    validated too, then ``validate()`` runs on every requirement. Requirements are
    copied (``copy.copy``) before generation starts; the originals are untouched.
    *validation_backend* (default *backend*) is what validators receive.

    Raises:
        ValueError: *chunking* is an unknown alias.
        TypeError: a requirement is not a ``Requirement``-like object.
        RuntimeError: the backend returned an already computed thunk (it ignored
            ``ModelOption.STREAM``).
    """
    strategy = resolve_chunking_strategy(chunking)
    reqs = [_copy_requirement(req) for req in as_requirements(requirements)]
    mot, gen_ctx = await backend.generate_from_context(action, ctx, model_options={ModelOption.STREAM: True})
    if mot.is_computed():
        raise RuntimeError(
            f"{type(backend).__name__}.generate_from_context returned an already computed thunk for a "
            "streaming request: the backend does not honour ModelOption.STREAM, so there is nothing to stream"
        )
    checker = validation_backend if validation_backend is not None else backend
    events = mot.owned_deltas().pipe(
        chunk(strategy),
        validate(reqs, backend=checker, ctx=gen_ctx),
        cancel_on_fail(),
        final_validation(reqs, backend=checker, ctx=gen_ctx),
        to_events(lambda: mot.text),
    )
    return StreamChunkingResult(mot, gen_ctx, events)


def _copy_requirement(req: Any) -> Requirement:
    (checked,) = as_requirements([req])  # the one place that checks requirements
    copied: Requirement = copy.copy(checked)
    return copied


class StreamChunkingResult:
    """The running (then finished) result of :func:`stream_with_chunking`.

    Created by :func:`stream_with_chunking`, already subscribed to the pipeline:
    events are recorded from the start, so nothing is lost by reading late.
    ``astream()`` and ``events()`` read independent queues, may run concurrently,
    and are single-consumer. ``observable`` replays every event to any subscriber.

    Attributes (final once :meth:`acomplete` returns):
        completed: False after a "fail", an exception or an external cancel.
        full_text: the whole output on a natural end; after a "fail", the span of
            the emitted chunks; after an exception, everything received.
        final_validations: the final ``validate()`` results (empty after an early exit).
        streaming_failures: ``(requirement, result)`` for every "fail".
    """

    def __init__(self, mot: ModelOutputThunk[Any], ctx: Context, events: Observable[StreamEvent]) -> None:
        self.mot = mot
        self.ctx = ctx
        self.completed = False
        self.full_text = ""
        self.final_validations: list[ValidationResult] = []
        self.streaming_failures: list[tuple[Requirement, PartialValidationResult]] = []
        self._log: ReplayLog[StreamEvent] = ReplayLog()
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._error: Exception | None = None
        self._error_raised = False
        self._cancelled = False
        self._consumers: set[str] = set()
        self._subscription = events.subscribe(self._on_event, self._on_error, self._on_completed)

    @property
    def observable(self) -> Observable[StreamEvent]:
        """Every event of this run (what already happened, then live), to compose further."""
        return self._log.observable

    async def astream(self) -> AsyncIterator[str]:
        """Yield validated chunks as they are delivered; ends after the last one.

        Raises the run's exception (once, shared with :meth:`acomplete`) after the
        chunks delivered before it. A second call raises ``RuntimeError``.
        """
        self._claim("astream")
        async with contextlib.aclosing(iterate(self._log.observable)) as events:
            async for event in events:
                if isinstance(event, ChunkEvent):
                    yield event.text
        error = self._take_error()
        if error is not None:
            raise error

    async def events(self) -> AsyncIterator[StreamEvent]:
        """Yield every :class:`StreamEvent`; the last is always a ``CompletedEvent``.

        Never raises the run's exception (it arrives as an ``ErrorEvent``). A second
        call raises ``RuntimeError``.
        """
        self._claim("events")
        async with contextlib.aclosing(iterate(self._log.observable)) as events:
            async for event in events:
                yield event

    async def acomplete(self) -> None:
        """Wait for the end of the run, final validation included.

        After an early exit the backend's task has been cancelled and has run its
        cleanup by the time this returns. Raises the run's exception unless
        ``astream()`` already raised it. If this
        wait is cancelled (``asyncio.wait_for`` timing out), the run is cancelled, the
        generation with it, and ``CancelledError`` propagates (and is raised again by
        later calls).
        """
        try:
            await asyncio.shield(self._done)
        except asyncio.CancelledError:
            self._cancel()
            raise
        if self._cancelled:
            raise asyncio.CancelledError("the stream_with_chunking run was cancelled")
        if not self.completed and self.mot.generation.cancel_requested_at is not None:
            # The generation was cancelled in this call stack; one loop turn lets the
            # backend's task run its cleanup (close the response) before we return.
            await asyncio.sleep(0)
        error = self._take_error()
        if error is not None:
            raise error

    def as_thunk(self) -> ModelOutputThunk[str]:
        """A computed thunk whose value is :attr:`full_text`, with the generation's metadata.

        Raises ``RuntimeError`` before the run has finished (call :meth:`acomplete` first).
        """
        if not self._done.done():
            raise RuntimeError("as_thunk() called before the run finished: await result.acomplete() first")
        return ModelOutputThunk(value=self.full_text, generation=attrs.evolve(self.mot.generation))

    # -- pipeline callbacks: trivial bookkeeping only (see RX_NOTES pitfall 2) ----

    def _on_event(self, event: StreamEvent) -> None:
        if isinstance(event, QuickCheckEvent) and not event.passed:
            self.streaming_failures.extend(
                (req, res)
                for req, res in zip(event.requirements, event.results, strict=True)
                if res.success == "fail"
            )
        elif isinstance(event, FullValidationEvent):
            self.final_validations = list(event.results)
        elif isinstance(event, CompletedEvent):
            self.completed = event.success
            self.full_text = event.full_text
        self._log.append(event)

    def _on_error(self, error: Exception) -> None:
        self._error = error
        self._finish()

    def _on_completed(self) -> None:
        self._finish()

    def _finish(self) -> None:
        self._log.complete()
        if not self._done.done():
            self._done.set_result(None)

    def _cancel(self) -> None:
        """External cancellation: stop the pipeline and the generation, end the event stream."""
        if self._done.done():
            return
        self._cancelled = True
        self._subscription.dispose()  # disposes the owned delta stream: the generation is cancelled
        self._on_event(CompletedEvent(success=False, full_text=self.mot.text))
        self._finish()

    def _take_error(self) -> Exception | None:
        if self._error is None or self._error_raised:
            return None
        self._error_raised = True
        return self._error

    def _claim(self, consumer: str) -> None:
        if consumer in self._consumers:
            raise RuntimeError(
                f"StreamChunkingResult.{consumer}() is single-consumer and was already called; "
                "keep what the first call yielded, or use result.full_text after acomplete()"
            )
        self._consumers.add(consumer)

    def __repr__(self) -> str:
        state = "running" if not self._done.done() else ("completed" if self.completed else "stopped early")
        return f"StreamChunkingResult({state}, {len(self._log.items)} events)"
