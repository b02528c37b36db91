"""``stream_with_chunking``: the assembly of the streaming pipeline.

::

    thunk deltas ─► chunk(strategy) ─► validate(reqs) ─► [retry_on_fail()] ─► cancel_on_fail()
                 ─► final_validation(reqs) ─► to_events()  ═► StreamChunkingResult

The source is the thunk's ``owned_deltas()``, so whenever the pipeline is
disposed (a "fail" completes it early, an error, an external cancel) the
generation is cancelled in the same call; ``validate`` is also given the thunk's
``cancel`` as ``stop=``, so a failing check stops the producer in its own step.
:func:`_assemble` is the one assembly; ``stream_with_chunking`` and Mellea 0.8's
``stream()`` (:mod:`engine.stream_handles`) both run it through :func:`start_run`. With
``retry=StreamRetry(...)``, ``retry_on_fail`` switches a retryable failure to a new
generation (a :class:`~engine.core.continuation.Continuation` of the delivered text, or
with JSON chunking a new document whose items are spliced after the delivered ones,
started by :class:`~engine.attempts.Attempts`) whose deltas go through their own ``chunk``
and ``validate`` into the same run.

The run's handle, :class:`~engine.result.StreamChunkingResult`, is in :mod:`engine.result`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from reactivex import Observable

from engine import structured
from engine.attempts import Attempts, checked_chunks, start_streaming
from engine.core import telemetry, typed_output
from engine.core.asyncrx import ReplayLog
from engine.core.backend import Backend
from engine.core.context import Context
from engine.core.continuation import StreamRetry
from engine.core.events import StreamEvent
from engine.core.options import ModelOption
from engine.core.requirements import Requirement
from engine.core.thunk import ModelOutputThunk
from engine.core.typed_output import OutputFormat
from engine.result import StreamChunkingResult
from engine.stream_arguments import check_stream_arguments, chunking_strategy
from operators.cancel_on_fail import cancel_on_fail
from operators.chunk import chunk
from operators.chunking import ChunkingStrategy, JsonChunking, ScanningStrategy
from operators.final_validation import final_validation
from operators.retry_on_fail import retry_on_fail
from operators.stop_when import stop_when
from operators.to_events import to_events
from operators.verdicts import ChunkVerdict, RetryRequest

__all__ = ["start_run", "stream_with_chunking"]


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
    return await start_run(
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


async def start_run(
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
    """Start a streaming generation and the pipeline over it (``stream_with_chunking`` and ``stream()``).

    *strategy* is a resolved chunking strategy (``stream()`` passes ``RawDeltas`` for
    ``chunking=None``); every other argument is as in :func:`stream_with_chunking`, checked here.
    """
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
        mot, gen_ctx = await start_streaming(backend, action, ctx, options, format)
    checker = validation_backend if validation_backend is not None else backend
    attempts = (
        None
        if retry is None
        else Attempts(retry, action, backend, ctx, mot, gen_ctx, options, strategy, format)
    )
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
    """A retry of a JSON answer splices a new document's items after the delivered ones, which
    needs the run's chunks to be those items: a requirement with JSON chunking of its own (a
    ``FieldCheck``) in a run with text chunking cannot be retried, nor any other scanning
    chunking (whose state a new generation cannot take up)."""
    if retry is None:
        return
    scanning = [
        s
        for s in [strategy, *(getattr(req, "chunking", None) for req in reqs)]
        if isinstance(s, ScanningStrategy)
    ]
    if not scanning:
        return
    if not isinstance(strategy, JsonChunking):
        raise ValueError(
            f"retry= with a requirement that reads JSON (a FieldCheck) needs chunking='json' for the run, "
            f"got chunking={strategy!r}: a retry splices a new document's items after the delivered "
            "ones, so the run's chunks must be those items; pass chunking='json' or retry=None"
        )
    other = [s for s in scanning if not isinstance(s, JsonChunking)]
    if other:
        raise ValueError(
            f"retry= is not supported with the scanning chunking {other[0]!r}: a new generation cannot "
            "take up its state; pass retry=None"
        )


def _assemble(
    mot: ModelOutputThunk[Any],
    gen_ctx: Context,
    reqs: list[Requirement],
    strategy: ChunkingStrategy,
    checker: Backend,
    stop: Observable[None],
    *,
    attempts: Attempts | None = None,
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
        return checked_chunks(mot, gen_ctx, reqs, chunk(strategy), checker, timeout, snapshots=False).pipe(
            cancel_on_fail(),
            final_validation(reqs, backend=checker, ctx=gen_ctx, timeout=timeout),
            stop_when(stop),
            to_events(lambda: mot.text),
        )

    def start_attempt(request: RetryRequest) -> Observable[ChunkVerdict]:
        return attempts.start(request, reqs, strategy, checker, timeout)

    return checked_chunks(mot, gen_ctx, reqs, chunk(strategy), checker, timeout, snapshots=True).pipe(
        retry_on_fail(start_attempt, max_attempts=attempts.policy.max_attempts, resumable=attempts.resumable),
        cancel_on_fail(),
        final_validation(reqs, backend=checker, ctx=attempts.final_ctx, timeout=timeout),
        stop_when(stop),
        to_events(attempts.received_text),
    )
