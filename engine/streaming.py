"""``stream_with_chunking``: the assembly of the streaming pipeline, and its result.

::

    thunk deltas ─► chunk(strategy) ─► validate(reqs) ─► [retry_on_fail()] ─► cancel_on_fail()
                 ─► final_validation(reqs) ─► to_events()  ═► StreamChunkingResult

The source is the thunk's ``owned_deltas()``, so whenever the pipeline is
disposed (a "fail" completes it early, an error, an external cancel) the
generation is cancelled in the same call; ``validate`` is also given the thunk's
``cancel`` as ``stop=``, so a failing check stops the producer in its own step.
:func:`_assemble` is the one assembly; ``stream_with_chunking`` and Mellea 0.8's
``stream()`` (engine/streamer.py) both run it. With ``retry=StreamRetry(...)``,
``retry_on_fail`` switches a retryable failure to a new generation (a
:class:`~engine.core.continuation.Continuation` of the delivered text) whose deltas go
through their own ``chunk`` and ``validate`` into the same run.

A run is owned by its readers: ``result.cancel()``, ``aclose()``, leaving
``async with result``, or leaving ``astream()``/``events()`` early cancels it (the
generation stops, the connection closes) and ends it with
``CompletedEvent(success=False)``. ``result.observable`` reads without owning the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import attrs
import reactivex
from reactivex import Observable, abc

from engine import structured
from engine.core import telemetry, typed_output
from engine.core.asyncrx import (
    LoopObservable,
    ReplayLog,
    Subscription,
    iterate,
    observe,
    report_unhandled,
    subscribe,
)
from engine.core.backend import Backend
from engine.core.context import Context
from engine.core.continuation import Continuation, StreamRetry
from engine.core.events import (
    ChunkEvent,
    CompletedEvent,
    FullValidationEvent,
    PartialObjectEvent,
    QuickCheckEvent,
    RetryEvent,
    StreamEvent,
    StreamingDoneEvent,
)
from engine.core.options import ModelOption
from engine.core.redaction import redact
from engine.core.requirements import PartialValidationResult, Requirement, ValidationResult
from engine.core.thunk import ModelOutputThunk
from engine.core.typed_output import OutputFormat
from engine.stream_arguments import check_stream_arguments, chunking_strategy
from operators.cancel_on_fail import cancel_on_fail
from operators.chunk import chunk
from operators.chunking import ChunkingStrategy, JsonChunking, ScanningStrategy
from operators.final_validation import final_validation
from operators.retry_on_fail import retry_on_fail
from operators.stop_when import stop_when
from operators.to_events import error_event, to_events
from operators.validate import validate
from operators.verdicts import ChunkVerdict, RetryRequest

__all__ = ["StreamChunkingResult", "StreamRetry", "stream_with_chunking"]

logger = logging.getLogger(__name__)

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
    model_options: Mapping[str, Any] | None = None,
    format: OutputFormat = None,
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

    *model_options* (``ModelOption`` keys or the provider's own option names) go to
    every generation of the run, retries included, with ``ModelOption.STREAM`` set.

    With *format* (a pydantic model, an attrs class, a ``TypeAdapter``-able type or a
    JSON schema ``dict``), the schema is sent to the server as ``ainstruct(format=...)``
    sends it, and with ``chunking="json"`` each record of the answer is a chunk (the
    items of the type's first list-typed field, the items of a list type, else each
    field: see :func:`engine.structured.record_path`); ``ChunkEvent.path``/``.value``
    say which and what. After each record a ``PartialObjectEvent`` carries
    ``result.partial``, the typed object of the records so far; after a successful run
    ``result.parsed`` is the whole answer as the type (``None`` otherwise; an answer that
    does not fit fails the run with an ``OutputParseError`` naming where).

    Every argument is checked before the backend is called: a refused call starts no
    generation.

    Raises:
        TypeError: an argument of the wrong type (a requirement that is not a
            ``Requirement``-like object, ``validation_timeout="2"``, a *model_options* that is
            not a mapping, ...); the message names it.
        ValueError: an argument of the wrong value (an unknown *chunking* alias, of the run
            or of a requirement; a *validation_timeout* that is not a finite number > 0).
        RuntimeError: the backend returned an already computed thunk (it ignored
            ``ModelOption.STREAM``).
    """
    return await _start_run(
        action,
        backend,
        ctx,
        requirements=requirements,
        strategy=chunking_strategy("chunking", chunking),
        validation_backend=validation_backend,
        validation_timeout=validation_timeout,
        retry=retry,
        model_options=model_options,
        format=format,
    )


async def _start_run(
    action: Any,
    backend: Backend,
    ctx: Context,
    *,
    requirements: Sequence[Requirement] | None,
    strategy: ChunkingStrategy,
    validation_backend: Backend | None,
    validation_timeout: float | None = None,
    retry: StreamRetry | None = None,
    model_options: Mapping[str, Any] | None = None,
    format: OutputFormat = None,
) -> StreamChunkingResult:
    """Start a streaming generation and the pipeline over it (``stream_with_chunking`` and ``stream()``)."""
    # Every argument checked before the backend is called (a refused call starts nothing);
    # the requirements copied: the originals stay untouched.
    checked = check_stream_arguments(
        action,
        backend,
        ctx,
        requirements=requirements,
        validation_backend=validation_backend,
        validation_timeout=validation_timeout,
        retry=retry,
        model_options=model_options,
    )
    reqs = [copy.copy(req) for req in checked]
    options = {**(model_options or {}), ModelOption.STREAM: True}
    if typed_output.is_free_text(format):
        format = None
    else:
        typed_output.json_schema(format)  # a TypeError naming a format that is no output type
        strategy = structured.structured_chunking(format, strategy)
        structured.bind_format(reqs, format)
    _refuse_structured_retry(retry, strategy, reqs)
    with telemetry.run_scope(backend, action, reqs) as run:  # the run's span, when telemetry is on
        mot, gen_ctx = await _start_streaming(backend, action, ctx, options, format)
    checker = validation_backend if validation_backend is not None else backend
    attempts = None if retry is None else _Attempts(retry, action, backend, ctx, mot, gen_ctx, options)
    # The cancel signal: a lock-free, loop-bound log (a reactivex Subject would add a lock
    # and three wrappers per run to every stream).
    stop: ReplayLog[None] = ReplayLog()
    events = _assemble(
        mot, gen_ctx, reqs, strategy, checker, stop.observable, attempts=attempts, timeout=validation_timeout
    )
    if format is not None and isinstance(strategy, JsonChunking):
        events = events.pipe(structured.partial_objects(format))
    result = StreamChunkingResult(mot, gen_ctx, events, stop, attempts=attempts, format=format)
    run.watch(result)
    return result


def _refuse_structured_retry(
    retry: StreamRetry | None, strategy: ChunkingStrategy, reqs: Sequence[Requirement]
) -> None:
    """In-stream retries continue the delivered text, which a JSON scanner cannot resume from
    (a schema-constrained server starts a new document): refused until retries splice records."""
    if retry is None:
        return
    owns = [getattr(req, "chunking", None) for req in reqs]
    if isinstance(strategy, ScanningStrategy) or any(isinstance(own, ScanningStrategy) for own in owns):
        raise ValueError(
            "retry= is not supported with JSON chunking (chunking='json' or a FieldCheck) yet: a retry "
            "continues the delivered text, and a JSON document cannot be resumed mid-way; pass retry=None"
        )


async def _start_streaming(
    backend: Backend, action: Any, ctx: Context, options: dict[str, Any], format: OutputFormat = None
) -> tuple[ModelOutputThunk[Any], Context]:
    # A copy per generation: a backend that edits the mapping it is given cannot reach the next one.
    mot, gen_ctx = await backend.generate_from_context(
        action, ctx, format=format, model_options=dict(options)
    )
    if mot.is_computed():
        raise RuntimeError(
            f"{type(backend).__name__}.generate_from_context returned an already computed thunk (in Mellea's "
            "words, an already-computed MOT) for a streaming request: the backend does not honour "
            "ModelOption.STREAM, so there is nothing to stream"
        )
    if mot.generation.provider is None:  # so that errors about this generation can name its backend
        mot.generation.provider = type(backend).__name__
    return mot, gen_ctx


def _assemble(
    mot: ModelOutputThunk[Any],
    gen_ctx: Context,
    reqs: list[Requirement],
    strategy: ChunkingStrategy,
    checker: Backend,
    stop: Observable[None],
    *,
    attempts: _Attempts | None = None,
    timeout: float | None = None,
) -> Observable[StreamEvent]:
    """The pipeline of one run, from the first generation's thunk to its events (the one assembly).

    Without *attempts* a failing chunk ends the run; with it (a run with retries) a
    retryable failure continues in a new generation that *attempts* starts and records.
    *stop* emitting cancels the run. *timeout* is the run's default deadline of a check.
    ``stop=mot.cancel``: a failing check stops its generation's producer in its own step,
    before anything else.
    """
    if attempts is None:
        return mot.owned_deltas().pipe(
            chunk(strategy),
            validate(reqs, backend=checker, ctx=gen_ctx, stop=mot.cancel, timeout=timeout, text=mot.deltas),
            cancel_on_fail(),
            final_validation(reqs, backend=checker, ctx=gen_ctx, timeout=timeout),
            stop_when(stop),
            to_events(lambda: mot.text),
        )

    def start_attempt(request: RetryRequest) -> Observable[ChunkVerdict]:
        return attempts.start(request, reqs, strategy, checker, timeout)

    return mot.owned_deltas().pipe(
        chunk(strategy),
        validate(
            reqs,
            backend=checker,
            ctx=gen_ctx,
            stop=mot.cancel,
            timeout=timeout,
            snapshots=True,
            text=mot.deltas,
        ),
        retry_on_fail(start_attempt, max_attempts=attempts.policy.max_attempts),
        cancel_on_fail(),
        final_validation(reqs, backend=checker, ctx=attempts.final_ctx, timeout=timeout),
        stop_when(stop),
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
        options: dict[str, Any],
    ) -> None:
        self.policy = policy
        self.options = options
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
        logger.info(
            "retrying the stream (attempt %d of %d): chunk %d failed: %s",
            request.attempt,
            self.policy.max_attempts,
            request.failed.chunk.chunk_index,
            redact(request.reason),
        )
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
            mot, gen_ctx = await _start_streaming(self.backend, continuation, self.ctx, self.options)
            self.mots.append(mot)
            self.current, self.gen_ctx = mot, gen_ctx
            return mot.owned_deltas().pipe(
                chunk(strategy, start_index=request.next_index, start_offset=request.delivered_end),
                validate(
                    reqs,
                    backend=checker,
                    ctx=gen_ctx,
                    stop=mot.cancel,
                    timeout=timeout,
                    snapshots=True,
                    text=mot.deltas,
                    carry=request.failed.carry,
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

    def subscribe_fn(observer: Any) -> abc.DisposableBase:
        inner: abc.DisposableBase | None = None
        disposed = False

        def fail(exc: Exception) -> None:
            if disposed:
                report_unhandled(exc, "a retry attempt failed to start after the run was disposed")
                return
            try:
                observer.on_error(exc)
            except Exception as downstream:
                if downstream is not exc:
                    report_unhandled(downstream, "a retry attempt's observer raised taking its error")

        async def run() -> None:
            nonlocal inner
            try:
                source = await factory()
            except Exception as exc:
                fail(exc)
                return
            try:
                link = observe(source, observer)
            except Exception as exc:  # the attempt's pipeline could not be built
                fail(exc)
                return
            if disposed:  # disposed while subscribing (a source that answered at once): stop it too
                link.dispose()
            else:
                inner = link

        task = asyncio.get_running_loop().create_task(run())

        def dispose() -> None:
            nonlocal disposed
            disposed = True
            task.cancel()
            if inner is not None:
                inner.dispose()

        return Subscription(dispose)

    return LoopObservable(subscribe_fn)


def _call_if_alive(method: weakref.WeakMethod[Any], error: Exception) -> None:
    bound = method()
    if bound is not None:
        bound(error)


class StreamChunkingResult:
    """The running (then finished) result of :func:`stream_with_chunking`.

    Created by :func:`stream_with_chunking`, already subscribed to the pipeline:
    events are recorded from the start, so nothing is lost by reading late.
    ``astream()`` and ``events()`` read independent queues, may run concurrently,
    and are single-consumer. ``observable`` replays every event to any subscriber.

    The run is owned by its readers: :meth:`cancel`, :meth:`aclose`, leaving
    ``async with result:``, or leaving ``astream()``/``events()`` early (``break``, an
    exception, the reading task cancelled) stops the generation and closes its
    connection; the run then ends with ``CompletedEvent(success=False)``. So does
    cancelling the thunk (``result.mot.cancel_generation()``), without final validation.
    Subscribing to ``observable`` does not own the run; but a subscriber that raises
    ends it with that exception, like any other stage.

    Attributes (final once :meth:`acomplete` returns):
        completed: False after a "fail", an exception or a cancel.
        full_text: the whole output on a natural end; after a "fail" or a cancel,
            the span of the emitted chunks; after an exception, everything received.
        final_validations: the final ``validate()`` results (empty after an early exit).
        streaming_failures: ``(requirement, result)`` for every requirement that failed the
            chunk the run ended on (as in Mellea); empty when the run did not end on a "fail".
        retried_failures: ``(requirement, result)`` for the failures that a retry repaired
            (each also shown by its ``QuickCheckEvent`` and ``RetryEvent``).
        mot: the thunk of the run's generation; in a run with retries, of the latest
            attempt (its value is only what that generation received, after the
            delivered text it continued). ``mots`` lists every attempt's thunk.
        ctx: the context after the run: the action, then the output. After a retry, once
            the run has ended, it ends with a computed thunk of ``full_text``.
        attempts_used: how many generations the run took (1 without a retry).
        partial: with ``format=`` and JSON chunking, the typed object built from the
            records delivered so far (``None`` before the first).
        parsed: with ``format=``, the whole answer as that type after a successful run;
            ``None`` otherwise.
    """

    def __init__(
        self,
        mot: ModelOutputThunk[Any],
        ctx: Context,
        events: Observable[StreamEvent],
        stop: ReplayLog[None],
        *,
        attempts: _Attempts | None = None,
        format: OutputFormat = None,
    ) -> None:
        self.mot = mot
        self.format = format
        self.partial: Any = None
        self.parsed: Any = None
        self.ctx = ctx
        self.mots = attempts.mots if attempts is not None else [mot]
        self.attempts_used = 1
        self._attempts = attempts
        self.completed = False
        self.full_text = ""
        self.final_validations: list[ValidationResult] = []
        self.streaming_failures: list[tuple[Requirement, PartialValidationResult]] = []
        self.retried_failures: list[tuple[Requirement, PartialValidationResult]] = []
        self._streamed_to_end = False  # a StreamingDoneEvent was seen (Mellea 0.8's completed_normally)
        # Held weakly: the log must not keep its result alive (a finished run is freed by
        # reference counting).
        fail_run = weakref.WeakMethod(self._fail_run)
        self._log: ReplayLog[StreamEvent] = ReplayLog(
            on_observer_error=lambda error: _call_if_alive(fail_run, error)
        )
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ended = False
        self._error: Exception | None = None
        self._error_raised = False
        self._cancelled = False
        self._consumers: set[str] = set()
        self._stop: ReplayLog[None] | None = stop
        self._subscription: abc.DisposableBase | None = None
        subscription = subscribe(events, self._on_event, self._on_error, self._on_completed)
        if self._ended:  # it ended while subscribing
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
        read_to_end = False
        try:
            async with contextlib.aclosing(iterate(self._log.observable)) as events:
                async for event in events:
                    if isinstance(event, ChunkEvent):
                        yield event.text
            read_to_end = True
        finally:
            if not read_to_end:  # the reader left early: it owned the run
                self.cancel()
        error = self._take_error()
        if error is not None:
            raise error

    async def events(self) -> AsyncIterator[StreamEvent]:
        """Yield every :class:`StreamEvent`; the last is always a ``CompletedEvent``.

        Never raises the run's exception (it arrives as an ``ErrorEvent``). A second
        call raises ``RuntimeError``. Leaving the loop early cancels the run.
        """
        self._claim("events")
        read_to_end = False
        try:
            async with contextlib.aclosing(iterate(self._log.observable)) as events:
                async for event in events:
                    yield event
            read_to_end = True
        finally:
            if not read_to_end:  # the reader left early: it owned the run
                self.cancel()

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
            raise asyncio.CancelledError("the run was cancelled while acomplete() waited")
        if not self.completed and self.mot.generation.cancel_requested_at is not None:
            # The generation was cancelled in this call stack; one loop turn lets the
            # backend's task run its cleanup (close the response) before we return.
            await asyncio.sleep(0)
        error = self._take_error()
        if error is not None:
            raise error

    def cancel(self) -> None:
        """Stop the run now: the generation is cancelled (its connection closed) and
        validators in flight with it; the run ends with ``CompletedEvent(success=False)``,
        ``completed`` False and ``full_text`` the span of the chunks delivered so far.
        No-op once the run has ended. Not an error: :meth:`acomplete` returns normally."""
        if self._ended:
            return
        if self._stop is not None:
            self._stop.append(None)
        if not self._ended:  # the pipeline had already stopped taking signals
            if self._subscription is not None:
                self._subscription.dispose()
            self._end(
                CompletedEvent(success=False, full_text=self._received_text(), attempts_used=len(self.mots))
            )

    def _received_text(self) -> str:
        return self._attempts.received_text() if self._attempts is not None else self.mot.text

    async def aclose(self) -> None:
        """Cancel the run if it has not ended, and give the backend's task one loop turn
        to run its cleanup (close the response). Idempotent; never raises the run's error."""
        self.cancel()
        if self.mot.generation.cancel_requested_at is not None:
            await asyncio.sleep(0)

    async def __aenter__(self) -> StreamChunkingResult:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def as_thunk(self) -> ModelOutputThunk[str]:
        """A thunk of :attr:`full_text`, with the generation's metadata (after a retry: the
        last attempt's): computed, or, after the run failed with an exception, failed with
        it (``avalue()`` raises it).

        Raises ``RuntimeError`` before the run has finished (call :meth:`acomplete` first).
        """
        if not self._done.done():
            raise RuntimeError("as_thunk() called before the run finished: await result.acomplete() first")
        if self._error is None:
            thunk: ModelOutputThunk[str] = ModelOutputThunk(value=self.full_text)
        else:
            text = reactivex.of(self.full_text) if self.full_text else reactivex.empty()
            thunk = ModelOutputThunk(reactivex.concat(text, reactivex.throw(self._error)))
        thunk.generation = attrs.evolve(self.mot.generation)
        return thunk

    # -- pipeline callbacks: trivial bookkeeping, and nothing may escape them ------

    def _on_event(self, event: StreamEvent) -> None:
        if self._ended:
            return
        try:
            self._record(event)
        except Exception as exc:
            self._fail_run(exc)
            return
        self._log.append(event)  # a subscriber that raises ends the run (_fail_run)

    def _record(self, event: StreamEvent) -> None:
        if isinstance(event, QuickCheckEvent) and not event.passed:
            self.streaming_failures.extend(
                (req, res)
                for req, res in zip(event.requirements, event.results, strict=True)
                if res.success == "fail"
            )
        elif isinstance(event, RetryEvent):  # the failure just recorded did not end the run
            self.retried_failures.extend(self.streaming_failures)
            self.streaming_failures.clear()
        elif isinstance(event, FullValidationEvent):
            self.final_validations = list(event.results)
        elif isinstance(event, StreamingDoneEvent):
            self._streamed_to_end = True
        elif isinstance(event, PartialObjectEvent):
            self.partial = event.partial
        elif isinstance(event, CompletedEvent):
            if event.success and self.format is not None:
                # An answer that does not fit fails the run (OutputParseError naming where).
                self.parsed = typed_output.parse(event.full_text, self.format)
            self.completed = event.success
            self.full_text = event.full_text
            self.attempts_used = event.attempts_used
            if self._attempts is not None and len(self.mots) > 1:
                self.mot = self.mots[-1]
                self.ctx = self._attempts.final_ctx()

    def _on_error(self, error: Exception) -> None:
        if self._ended:
            if error is not self._error:
                report_unhandled(error, "StreamChunkingResult: an error after the run ended")
            return
        self._error = error
        self._finish()

    def _on_completed(self) -> None:
        self._finish()

    def _fail_run(self, error: Exception) -> None:
        """This result's own bookkeeping, or a subscriber of :attr:`observable`, raised:
        stop the pipeline and the generation, and end the run with *error*."""
        if self._ended or (self._log.items and isinstance(self._log.items[-1], CompletedEvent)):
            # The run's events are final (CompletedEvent is the last): raise it, add no event.
            if self._error is None:
                self._error = error
            elif error is not self._error:
                report_unhandled(error, "StreamChunkingResult: a subscriber raised after the run ended")
            return
        self._error = error
        if self._subscription is not None:
            self._subscription.dispose()  # the generation stops first
        self._end(error_event(error), CompletedEvent(success=False, full_text=self._received_text()))

    def _end(self, *events: StreamEvent) -> None:
        """End the run with *events*, which the pipeline could not deliver itself."""
        self._ended = True
        self.completed = False
        for event in events:
            if isinstance(event, CompletedEvent):
                self.full_text = event.full_text
            self._log.append(event)
        self._finish()

    def _finish(self) -> None:
        self._ended = True
        # The pipeline is over: drop the subscription (it holds this result's callbacks),
        # so a finished run is freed by reference counting, not left to the cycle collector.
        subscription, self._subscription, self._stop = self._subscription, None, None
        if subscription is not None:
            subscription.dispose()
        self._log.complete()
        if not self._done.done():
            self._done.set_result(None)

    def _cancel(self) -> None:
        """External cancellation of acomplete(): cancel the run, and make acomplete() raise it."""
        if self._ended:
            return
        self._cancelled = True
        self.cancel()

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
