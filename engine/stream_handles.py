"""Mellea 0.8's streaming API, ``stream()``, over the same pipeline as ``stream_with_chunking``.

::

    async with await stream(action, backend, ctx, requirements=[...]) as s:
        async for chunk in s:
            ...

``stream()`` starts the generation and the pipeline (the one assembly in
:mod:`engine.assembly`) and returns a handle: a :class:`Streamer` iterating validated
``str`` chunks, or with ``as_events=True`` an :class:`EventStreamer` iterating the
:class:`~engine.core.events.StreamEvent` objects. Leaving the ``async with`` block (its
end, ``break``, an exception) cancels the generation and closes the connection.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, overload

from engine.assembly import start_run
from engine.core import arguments
from engine.core.backend import Backend
from engine.core.context import Context
from engine.core.continuation import StreamRetry
from engine.core.events import StreamEvent
from engine.core.requirements import PartialValidationResult, Requirement, ValidationResult
from engine.core.thunk import ModelOutputThunk
from engine.core.typed_output import OutputFormat
from engine.result import StreamChunkingResult, streamed_to_end, take_error
from engine.stream_arguments import chunking_strategy
from operators.chunking import ChunkingStrategy, RawDeltas

__all__ = ["EventStreamer", "Streamer", "stream"]


@overload
async def stream(
    action: Any,
    backend: Backend,
    ctx: Context,
    *,
    chunking: str | ChunkingStrategy | None = ...,
    requirements: Sequence[Requirement] | None = ...,
    validation_backend: Backend | None = ...,
    as_events: Literal[False] = ...,
    validation_timeout: float | None = ...,
    retry: StreamRetry | None = ...,
    model_options: Mapping[str, Any] | None = ...,
    format: OutputFormat = ...,
) -> Streamer: ...


@overload
async def stream(
    action: Any,
    backend: Backend,
    ctx: Context,
    *,
    chunking: str | ChunkingStrategy | None = ...,
    requirements: Sequence[Requirement] | None = ...,
    validation_backend: Backend | None = ...,
    as_events: Literal[True],
    validation_timeout: float | None = ...,
    retry: StreamRetry | None = ...,
    model_options: Mapping[str, Any] | None = ...,
    format: OutputFormat = ...,
) -> EventStreamer: ...


@overload
async def stream(
    action: Any,
    backend: Backend,
    ctx: Context,
    *,
    chunking: str | ChunkingStrategy | None = ...,
    requirements: Sequence[Requirement] | None = ...,
    validation_backend: Backend | None = ...,
    as_events: bool,
    validation_timeout: float | None = ...,
    retry: StreamRetry | None = ...,
    model_options: Mapping[str, Any] | None = ...,
    format: OutputFormat = ...,
) -> Streamer | EventStreamer: ...


async def stream(
    action: Any,
    backend: Backend,
    ctx: Context,
    *,
    chunking: str | ChunkingStrategy | None = None,
    requirements: Sequence[Requirement] | None = None,
    validation_backend: Backend | None = None,
    as_events: bool = False,
    validation_timeout: float | None = None,
    retry: StreamRetry | None = None,
    model_options: Mapping[str, Any] | None = None,
    format: OutputFormat = None,
) -> Streamer | EventStreamer:
    """Start a streaming generation (Mellea 0.8's API); consume it inside ``async with``.

    Generation begins before this returns. Iterating the :class:`Streamer` yields each
    chunk once it passed every requirement's ``stream_validate``: a unit of *chunking*
    (``"sentence"``, ``"word"``, ``"paragraph"`` or a strategy), or with ``chunking=None``
    (the default) each raw delta of the model. A "fail" stops the stream and cancels
    the generation; an exception is raised by the ``async for`` after the chunks before
    it; on a natural end every requirement's ``validate()`` runs on the whole output.
    With ``as_events=True`` the handle is an :class:`EventStreamer` over the typed
    events instead. Leaving the ``async with`` block (end, ``break``, exception)
    cancels the generation if it still runs and closes its connection.
    *validation_timeout*, *retry*, *model_options* and *format* are as in
    :func:`~engine.assembly.stream_with_chunking` (``s.result.partial`` and
    ``s.result.parsed`` hold the typed values).

    Every argument is checked before the backend is called: a refused call starts no
    generation.

    Raises:
        TypeError: an argument of the wrong type; the message names it.
        ValueError: an argument of the wrong value (an unknown *chunking* alias, of the run
            or of a requirement; a *validation_timeout* that is not a finite number > 0).
        RuntimeError: the backend returned an already computed thunk (it ignored
            ``ModelOption.STREAM``).
    """
    strategy = RawDeltas() if chunking is None else chunking_strategy("chunking", chunking)
    arguments.flag("as_events", as_events)
    result = await start_run(
        action,
        backend,
        ctx,
        requirements=requirements,
        strategy=strategy,
        validation_backend=validation_backend,
        validation_timeout=validation_timeout,
        retry=retry,
        model_options=model_options,
        format=format,
    )
    return EventStreamer(result) if as_events else Streamer(result)


class _Handle:
    """What both handles share: the run, its outcome attributes (Mellea 0.8's names), and its lifetime."""

    def __init__(self, result: StreamChunkingResult) -> None:
        self._result = result
        self.streaming_id = str(uuid.uuid4())
        """Identifies this stream (Mellea 0.8 correlates its hooks with it)."""

    @property
    def result(self) -> StreamChunkingResult:
        """The run as Mellea 0.7's :class:`StreamChunkingResult` (``observable``, ``acomplete()``, ...)."""
        return self._result

    @property
    def failed_early(self) -> bool:
        """True if a requirement returned "fail" and the stream stopped before its end (a
        failure that a retry repaired does not count: see :attr:`retried_failures`)."""
        return bool(self._result.streaming_failures)

    @property
    def completed_normally(self) -> bool:
        """True only if the stream reached its natural end (before final validation)."""
        return streamed_to_end(self._result)

    @property
    def failure_reason(self) -> str | None:
        """Why the stream failed early, if it did (``None`` after a retry repaired it)."""
        failures = self._result.streaming_failures
        if not failures:
            return None
        return f"Streaming validation failed: {failures[-1][1].reason or ''}"

    @property
    def streaming_failures(self) -> list[tuple[Requirement, PartialValidationResult]]:
        """``(requirement, result)`` for every requirement that failed the chunk the stream
        ended on; empty unless :attr:`failed_early`."""
        return self._result.streaming_failures

    @property
    def retried_failures(self) -> list[tuple[Requirement, PartialValidationResult]]:
        """``(requirement, result)`` for the failures that a retry repaired (with
        ``retry=StreamRetry(...)``); each is also in the events (``RetryEvent``)."""
        return self._result.retried_failures

    @property
    def full_text(self) -> str:
        """Once the stream ended: the whole output on a natural end, the delivered span after
        a "fail" or a cancel, everything received after an exception; ``""`` before."""
        return self._result.full_text

    @property
    def mot(self) -> ModelOutputThunk[Any] | None:
        """The computed thunk once the stream reached its natural end; ``None`` otherwise."""
        return self._result.mot if self.completed_normally else None

    @property
    def final_validations(self) -> list[ValidationResult]:
        """The final ``validate()`` results (empty unless the stream ended naturally)."""
        return self._result.final_validations

    async def aclose(self) -> None:
        """Release the stream: cancel the generation if it still runs and close its
        connection. Idempotent; safe whether or not the stream was iterated."""
        await self._close_iterator()
        await self._result.aclose()

    async def _close_iterator(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class Streamer(_Handle):
    """The handle :func:`stream` returns: ``async for chunk in s`` yields validated ``str`` chunks.

    The iterator is the stream's one reader: ``break`` and iterating again resumes where
    it stopped. The run's exception is raised by the ``async for`` after the chunks
    delivered before it (once: ``s.result.acomplete()`` then returns). Do not
    instantiate directly.
    """

    def __init__(self, result: StreamChunkingResult) -> None:
        super().__init__(result)
        self._chunks: AsyncIterator[str] | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        if self._chunks is None:
            self._chunks = self._result.astream()
        return self._chunks

    async def _close_iterator(self) -> None:
        if self._chunks is not None:
            await self._chunks.aclose()  # type: ignore[attr-defined]

    async def __aenter__(self) -> Streamer:
        return self

    def __repr__(self) -> str:
        return f"Streamer({self._result!r})"


class EventStreamer(_Handle):
    """The handle ``stream(..., as_events=True)`` returns: iterating it yields every
    :class:`~engine.core.events.StreamEvent`, the last being ``CompletedEvent``.

    It is its own iterator (``break`` then iterating again resumes). As in Mellea 0.8,
    a run that failed raises its exception once the ``ErrorEvent`` and the
    ``CompletedEvent`` have been yielded. Do not instantiate directly.
    """

    def __init__(self, result: StreamChunkingResult) -> None:
        super().__init__(result)
        self._events: AsyncIterator[StreamEvent] | None = None

    def __aiter__(self) -> EventStreamer:
        return self

    async def __anext__(self) -> StreamEvent:
        if self._events is None:
            self._events = self._result.events()
        try:
            return await anext(self._events)
        except StopAsyncIteration:
            pass
        error = take_error(self._result)
        if error is not None:
            raise error
        raise StopAsyncIteration

    async def _close_iterator(self) -> None:
        if self._events is not None:
            await self._events.aclose()  # type: ignore[attr-defined]

    async def __aenter__(self) -> EventStreamer:
        return self

    def __repr__(self) -> str:
        return f"EventStreamer({self._result!r})"
