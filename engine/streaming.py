"""``stream_with_chunking``: the assembly of the streaming pipeline, and its result.

::

    thunk deltas ─► chunk(strategy) ─► validate(reqs) ─► [retry_on_fail()] ─► cancel_on_fail()
                 ─► final_validation(reqs) ─► to_events()  ═► StreamChunkingResult

The source is the thunk's ``owned_deltas()``, so whenever the pipeline is
disposed (a "fail" completes it early, an error, an external cancel) the
generation is cancelled in the same call. With ``retry=StreamRetry(...)``,
``retry_on_fail`` switches a retryable failure to a new generation (a
:class:`~engine.core.continuation.Continuation` of the delivered text) whose deltas go
through their own ``chunk`` and ``validate`` into the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import attrs
from reactivex import Observable, abc
from reactivex.disposable import Disposable, SingleAssignmentDisposable

from engine.core.asyncrx import ReplayLog, iterate, subscribe
from engine.core.backend import Backend
from engine.core.context import Context
from engine.core.continuation import Continuation, StreamRetry
from engine.core.events import ChunkEvent, CompletedEvent, FullValidationEvent, QuickCheckEvent, StreamEvent
from engine.core.options import ModelOption
from engine.core.requirements import PartialValidationResult, Requirement, ValidationResult
from engine.core.thunk import ModelOutputThunk
from operators.cancel_on_fail import cancel_on_fail
from operators.chunk import chunk
from operators.chunking import ChunkingStrategy, resolve_chunking_strategy
from operators.final_validation import final_validation
from operators.retry_on_fail import retry_on_fail
from operators.to_events import to_events
from operators.validate import validate
from operators.verdicts import ChunkVerdict, RetryRequest

__all__ = ["StreamChunkingResult", "StreamRetry", "stream_with_chunking"]

T = TypeVar("T")


async def stream_with_chunking(
    action: Any,
    backend: Backend,
    ctx: Context,
    *,
    requirements: Sequence[Requirement] | None = None,
    chunking: str | ChunkingStrategy = "sentence",
    validation_backend: Backend | None = None,
    validation_timeout: float | None = None,
    retry: StreamRetry | None = None,
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
    *validation_timeout* (seconds) is the deadline of every check whose requirement
    sets no ``timeout`` of its own (past it the check counts as its ``on_timeout``).

    With *retry* (a :class:`StreamRetry`), a failing chunk whose failures are all
    retryable does not end the run while attempts remain: the chunk is withheld, its
    generation cancelled, and a new generation continues the answer from the delivered
    text (given to the model as the start of its answer, with a repair instruction
    naming the failure); its chunks flow into the same result. Consumers see a
    ``RetryEvent`` between the attempts and never lose a delivered chunk; requirements
    keep their state as if the delivered text had come from one generation.
    ``full_text`` is the delivered text, and the final validation judges it.

    Raises:
        ValueError: *chunking* is an unknown alias.
        TypeError: a requirement is not a ``Requirement``-like object.
        RuntimeError: the backend returned an already computed thunk (it ignored
            ``ModelOption.STREAM``).
    """
    strategy = resolve_chunking_strategy(chunking)
    reqs = [_copy_requirement(req) for req in (requirements or ())]
    if retry is not None and not isinstance(retry, StreamRetry):
        raise TypeError(
            f"retry must be a StreamRetry (e.g. StreamRetry(max_attempts=3)) or None, got {retry!r}"
        )
    mot, gen_ctx = await _start_streaming(backend, action, ctx)
    checker = validation_backend if validation_backend is not None else backend
    attempts = None if retry is None else _Attempts(retry, action, backend, ctx, mot, gen_ctx)
    events = _assemble(mot, gen_ctx, reqs, strategy, checker, attempts=attempts, timeout=validation_timeout)
    return StreamChunkingResult(mot, gen_ctx, events, attempts=attempts)


async def _start_streaming(
    backend: Backend, action: Any, ctx: Context
) -> tuple[ModelOutputThunk[Any], Context]:
    mot, gen_ctx = await backend.generate_from_context(action, ctx, model_options={ModelOption.STREAM: True})
    if mot.is_computed():
        raise RuntimeError(
            f"{type(backend).__name__}.generate_from_context returned an already computed thunk for a "
            "streaming request: the backend does not honour ModelOption.STREAM, so there is nothing to stream"
        )
    return mot, gen_ctx


def _assemble(
    mot: ModelOutputThunk[Any],
    gen_ctx: Context,
    reqs: list[Requirement],
    strategy: ChunkingStrategy,
    checker: Backend,
    *,
    attempts: _Attempts | None = None,
    timeout: float | None = None,
) -> Observable[StreamEvent]:
    """The pipeline of one run, from the first generation's thunk to its events (the one assembly).

    Without *attempts* a failing chunk ends the run; with it (a run with retries) a
    retryable failure continues in a new generation that *attempts* starts and records.
    *timeout* is the run's default deadline of a check. ``stop=mot.cancel``: a failing
    check stops its generation's producer in its own step, before anything else.
    """
    if attempts is None:
        return mot.owned_deltas().pipe(
            chunk(strategy),
            validate(reqs, backend=checker, ctx=gen_ctx, stop=mot.cancel, timeout=timeout),
            cancel_on_fail(),
            final_validation(reqs, backend=checker, ctx=gen_ctx, timeout=timeout),
            to_events(lambda: mot.text),
        )

    def start_attempt(request: RetryRequest) -> Observable[ChunkVerdict]:
        return attempts.start(request, reqs, strategy, checker, timeout)

    return mot.owned_deltas().pipe(
        chunk(strategy),
        validate(reqs, backend=checker, ctx=gen_ctx, stop=mot.cancel, timeout=timeout, snapshots=True),
        retry_on_fail(start_attempt, max_attempts=attempts.policy.max_attempts),
        cancel_on_fail(),
        final_validation(reqs, backend=checker, ctx=attempts.final_ctx, timeout=timeout),
        to_events(attempts.received_text),
    )


class _Attempts:
    """The generations of a run with retries, and the delivered text the current one continues.

    The run's output is ``prefix`` (the delivered text the current attempt continues)
    followed by what the current attempt's generation has received.
    """

    def __init__(
        self,
        policy: StreamRetry,
        action: Any,
        backend: Backend,
        ctx: Context,
        first: ModelOutputThunk[Any],
        first_ctx: Context,
    ) -> None:
        self.policy = policy
        self.action = action
        self.backend = backend
        self.ctx = ctx
        self.mots: list[ModelOutputThunk[Any]] = [first]
        self.gen_ctx = first_ctx
        self.prefix = ""
        self.current: ModelOutputThunk[Any] | None = first
        """The generation in progress (None while the next one is being started)."""
        self._whole: tuple[str, Context] | None = None

    def received_text(self) -> str:
        """The run's output so far: the delivered prefix, then the current attempt's text."""
        return self.prefix + (self.current.text if self.current is not None else "")

    def final_ctx(self) -> Context:
        """The context the final validation judges: the action, then the run's whole output."""
        if len(self.mots) == 1:
            return self.gen_ctx
        text = self.received_text()
        if self._whole is None or self._whole[0] != text:  # one thunk for the validators and result.ctx
            whole = ModelOutputThunk[Any](value=text, generation=attrs.evolve(self.mots[-1].generation))
            self._whole = (text, self.ctx.add(self.action).add(whole))
        return self._whole[1]

    def start(
        self,
        request: RetryRequest,
        reqs: list[Requirement],
        strategy: ChunkingStrategy,
        checker: Backend,
        timeout: float | None,
    ) -> Observable[ChunkVerdict]:
        """Start attempt ``request.attempt``: a generation continuing the delivered text, chunked
        and validated from where the delivered text ends."""
        self.prefix = self.received_text()[: request.delivered_end]
        self.current = None
        # The failing chunk is not counted: every requirement continues from its state
        # right before it.
        _restore_states(reqs, request.failed.restore)
        continuation = Continuation(
            self.action,
            self.prefix,
            repair=self.policy.repair_instruction(request.reason, request.failed.chunk.text),
            attempt=request.attempt,
        )

        async def begin() -> Observable[ChunkVerdict]:
            mot, gen_ctx = await _start_streaming(self.backend, continuation, self.ctx)
            self.mots.append(mot)
            self.current, self.gen_ctx = mot, gen_ctx
            return mot.owned_deltas().pipe(
                chunk(strategy, start_index=request.next_index, start_offset=request.delivered_end),
                validate(
                    reqs, backend=checker, ctx=gen_ctx, stop=mot.cancel, timeout=timeout, snapshots=True
                ),
            )

        return _from_awaitable(begin)


def _restore_states(live: Sequence[Requirement], saved: Sequence[Requirement] | None) -> None:
    """Put each requirement back in the state of its snapshot (``copy.copy`` taken earlier)."""
    for req, snapshot in zip(live, saved or (), strict=False):
        if snapshot is req:
            continue
        if hasattr(snapshot, "__dict__"):
            vars(req).clear()
            vars(req).update(vars(snapshot))
        for cls in type(snapshot).__mro__:
            slots = getattr(cls, "__slots__", ())
            for name in (slots,) if isinstance(slots, str) else slots:
                if name not in ("__dict__", "__weakref__") and hasattr(snapshot, name):
                    object.__setattr__(req, name, getattr(snapshot, name))


def _from_awaitable(factory: Callable[[], Awaitable[Observable[T]]]) -> Observable[T]:
    """An observable that awaits ``factory()`` in a task, then follows the observable it returns.

    An exception from *factory* becomes ``on_error``; disposal cancels the task or
    disposes the inner subscription.
    """

    def subscribe(
        observer: abc.ObserverBase[T], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        inner = SingleAssignmentDisposable()

        async def run() -> None:
            try:
                source = await factory()
            except Exception as exc:
                observer.on_error(exc)
                return
            inner.disposable = source.subscribe(observer, scheduler=scheduler)

        task = asyncio.get_running_loop().create_task(run())

        def dispose() -> None:
            task.cancel()
            inner.dispose()

        return Disposable(dispose)

    return Observable(subscribe)


def _copy_requirement(req: Any) -> Requirement:
    if not (hasattr(req, "stream_validate") and hasattr(req, "validate")):
        raise TypeError(
            f"requirements must be Requirement objects (with stream_validate and validate), got {req!r}; "
            "wrap a plain function with engine.Requirement(description, validation_fn=...)"
        )
    copied: Requirement = copy.copy(req)
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
        streaming_failures: ``(requirement, result)`` for every "fail" (with retries,
            the retried ones too).
        mot: the thunk of the run's generation; in a run with retries, of the latest
            attempt (its value is only what that generation received, after the
            delivered text it continued). ``mots`` lists every attempt's thunk.
        ctx: the context after the run: the action, then the output. After a retry, once
            the run has ended, it ends with a computed thunk of ``full_text``.
        attempts_used: how many generations the run took (1 without a retry).
    """

    def __init__(
        self,
        mot: ModelOutputThunk[Any],
        ctx: Context,
        events: Observable[StreamEvent],
        *,
        attempts: _Attempts | None = None,
    ) -> None:
        self.mot = mot
        self.ctx = ctx
        self.mots = attempts.mots if attempts is not None else [mot]
        self.attempts_used = 1
        self._attempts = attempts
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
        self._subscription: abc.DisposableBase | None = None
        subscription = subscribe(events, self._on_event, self._on_error, self._on_completed)
        if self._done.done():  # it ended while subscribing
            subscription.dispose()
        else:
            self._subscription = subscription

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
        """A computed thunk whose value is :attr:`full_text`, with the generation's metadata
        (after a retry: the last attempt's).

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
            self.attempts_used = event.attempts_used
            if self._attempts is not None and len(self.mots) > 1:
                self.mot = self.mots[-1]
                self.ctx = self._attempts.final_ctx()
        self._log.append(event)

    def _on_error(self, error: Exception) -> None:
        self._error = error
        self._finish()

    def _on_completed(self) -> None:
        self._finish()

    def _finish(self) -> None:
        # The pipeline is over: drop the subscription (it holds this result's callbacks),
        # so a finished run is freed by reference counting, not left to the cycle collector.
        if self._subscription is not None:
            self._subscription.dispose()
        self._log.complete()
        if not self._done.done():
            self._done.set_result(None)

    def _cancel(self) -> None:
        """External cancellation: stop the pipeline and the generation, end the event stream."""
        if self._done.done():
            return
        self._cancelled = True
        if self._subscription is not None:  # disposes the owned delta stream: the generation is cancelled
            self._subscription.dispose()
        text = self._attempts.received_text() if self._attempts is not None else self.mot.text
        self._on_event(CompletedEvent(success=False, full_text=text, attempts_used=len(self.mots)))
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
