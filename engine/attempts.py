"""The generations of a run: starting one, and the attempts of a run with retries.

A run with ``retry=StreamRetry(...)`` may take several generations: when a retryable
failure ends one, :meth:`Attempts.start` starts the next and chunks and validates it
from where the delivered text ends, after :func:`restore_states` put every requirement
back in its state before the failing chunk. With text chunking the next generation is a
:class:`~engine.core.continuation.Continuation` of the delivered text. With JSON
chunking it is a :class:`~engine.core.continuation.JsonContinuation`: a new document
holding the items after the delivered ones, spliced after them
(:mod:`operators.chunking.json_splice`), or, when nothing was delivered, a new document
that replaces the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from reactivex import Observable

from engine.core.asyncrx import from_awaitable
from engine.core.backend import Backend
from engine.core.context import Context
from engine.core.continuation import Continuation, JsonContinuation, StreamRetry
from engine.core.redaction import redact
from engine.core.requirements import Requirement
from engine.core.thunk import ModelOutputThunk
from engine.core.typed_output import OutputFormat
from operators.chunk import chunk
from operators.chunking import Chunk, ChunkingStrategy, JsonChunking
from operators.chunking.json_splice import JsonSplice, ResumePoint, resume_point
from operators.splice_document import splice_document
from operators.validate import validate
from operators.verdicts import ChunkVerdict, RetryRequest

__all__ = ["Attempts", "restore_states", "start_streaming"]

logger = logging.getLogger(__name__)


def checked_chunks(
    mot: ModelOutputThunk[Any],
    gen_ctx: Context,
    reqs: Sequence[Requirement],
    chunking: Callable[[Observable[str]], Observable[Chunk]],
    checker: Backend,
    timeout: float | None,
    *,
    snapshots: bool,
    carry: Sequence[tuple[int, str] | None] | None = None,
    splice: tuple[JsonSplice, JsonSplice] | None = None,
    start_index: int = 0,
) -> Observable[ChunkVerdict]:
    """One generation's deltas, chunked by *chunking* and validated: the part every run and
    every retry attempt share. ``stop=mot.cancel``: a failing check stops this generation's
    producer in its own step; requirements with their own chunking read its raw deltas.
    *splice* (a JSON retry's new document): the chunks' deltas and the raw deltas each go
    through a splice of their own (two readers of one document, each with its state)."""
    deltas, text = mot.owned_deltas(), mot.deltas
    if splice is not None:
        deltas, text = deltas.pipe(splice_document(splice[0])), text.pipe(splice_document(splice[1]))
    return deltas.pipe(
        chunking,
        validate(
            reqs,
            backend=checker,
            ctx=gen_ctx,
            stop=mot.cancel,
            timeout=timeout,
            snapshots=snapshots,
            text=text,
            carry=carry,
            start_index=start_index,
        ),
    )


async def start_streaming(
    backend: Backend, action: Any, ctx: Context, options: dict[str, Any], format: OutputFormat = None
) -> tuple[ModelOutputThunk[Any], Context]:
    """Start one streaming generation of *action* (``ModelOption.STREAM`` in *options*): its thunk, context.

    Raises ``RuntimeError`` if the backend returned an already computed thunk.
    """
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


class Attempts:
    """The generations of a run with retries, and the delivered text the current one continues.

    The run's output is ``prefix`` (the delivered text the current attempt continues)
    followed by what the current attempt's generation has received (after a JSON retry
    that splices: what its new document adds after the delivered items). Every attempt
    is sent the run's *format*.
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
        strategy: ChunkingStrategy,
        format: OutputFormat = None,
    ) -> None:
        self.policy = policy
        self.strategy = strategy
        self.format = format
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
        self._splice: JsonSplice | None = None  # what the current attempt's new document adds
        self._point: tuple[int, ResumePoint | None] = (-1, None)

    def received_text(self) -> str:
        """The run's output so far: the delivered prefix, then the current attempt's text."""
        if self._splice is not None:
            return self.prefix + self._splice.text
        return self.prefix + (self.current.text if self.current is not None else "")

    def resumable(self, failed: ChunkVerdict, delivered_end: int) -> bool:
        """Whether a new attempt can take over after *failed*, with the delivered text ending at
        *delivered_end*: always with text chunking; with JSON chunking when nothing was
        delivered (a new document replaces the answer) or when the delivered text ends right
        after an item of an array reached through field names (see
        :func:`~operators.chunking.json_splice.resume_point`). Elsewhere (after a field, in
        an array inside an array) a new document's items could not be spliced: the failure
        ends the run as one that is not retryable."""
        if not isinstance(self.strategy, JsonChunking) or delivered_end == 0:
            return True
        if self._point[0] != delivered_end:
            delivered = self.received_text()[:delivered_end]
            self._point = (delivered_end, resume_point(self.strategy, delivered))
        if self._point[1] is None:
            logger.info(
                "not retrying the stream: the delivered JSON ends where a new document's items "
                "cannot be spliced (after chunk %d, at offset %d; only after an item of an array "
                "reached through field names)",
                failed.chunk.chunk_index - 1,
                delivered_end,
            )
            return False
        return True

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
        """Start attempt ``request.attempt``: a generation continuing the delivered text (with
        JSON chunking: a new document, spliced after it), chunked and validated from where the
        delivered text ends."""
        logger.info(
            "retrying the stream (attempt %d of %d): chunk %d failed: %s",
            request.attempt,
            self.policy.max_attempts,
            request.failed.chunk.chunk_index,
            redact(request.reason),
        )
        end = request.delivered_end
        delivered = self.received_text()[:end]
        self.prefix = delivered
        self.current = self._splice = None
        # The failing chunk is not counted: every requirement continues from its state
        # right before it.
        restore_states(reqs, request.failed.restore)
        rejected = request.failed.chunk.text
        point: ResumePoint | None = None
        resume = ""  # what the chunker reads first to go on (a JSON document's nesting)
        action: Continuation | JsonContinuation
        if isinstance(strategy, JsonChunking):
            if end:  # items were delivered: the new document's go after them
                point, resume = self._point[1], delivered
                assert point is not None and self._point[0] == end, "retry_on_fail asks resumable() first"
            instruction = self.policy.json_instruction(
                request.reason, rejected, point.array if point else None, point.kept if point else 0
            )
            action = JsonContinuation(self.action, instruction, attempt=request.attempt)
        else:
            repair = self.policy.repair_instruction(request.reason, rejected)
            action = Continuation(self.action, delivered, repair=repair, attempt=request.attempt)

        async def begin() -> Observable[ChunkVerdict]:
            mot, gen_ctx = await start_streaming(self.backend, action, self.ctx, self.options, self.format)
            self.mots.append(mot)
            self.current, self.gen_ctx = mot, gen_ctx
            splice = None
            if point is not None:
                assert isinstance(strategy, JsonChunking)
                splice = (JsonSplice(strategy, point), JsonSplice(strategy, point))
                self._splice = splice[0]
            chunking = chunk(
                strategy, start_index=request.next_index, start_offset=end - len(resume), resume=resume
            )
            return checked_chunks(
                mot,
                gen_ctx,
                reqs,
                chunking,
                checker,
                timeout,
                snapshots=True,
                carry=request.failed.carry,
                splice=splice,
                start_index=request.next_index,
            )

        return from_awaitable(begin)


def restore_states(live: Sequence[Requirement], saved: Sequence[Requirement] | None) -> None:
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
