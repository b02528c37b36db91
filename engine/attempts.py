"""The generations of a run: starting one, and the attempts of a run with retries.

A run with ``retry=StreamRetry(...)`` may take several generations: when a retryable
failure ends one, :meth:`Attempts.start` starts the next (a
:class:`~engine.core.continuation.Continuation` of the delivered text) and chunks and
validates it from where the delivered text ends, after :func:`restore_states` put every
requirement back in its state before the failing chunk.
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
from engine.core.continuation import Continuation, StreamRetry
from engine.core.redaction import redact
from engine.core.requirements import Requirement
from engine.core.thunk import ModelOutputThunk
from engine.core.typed_output import OutputFormat
from operators.chunk import chunk
from operators.chunking import Chunk, ChunkingStrategy
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
) -> Observable[ChunkVerdict]:
    """One generation's deltas, chunked by *chunking* and validated: the part every run and
    every retry attempt share. ``stop=mot.cancel``: a failing check stops this generation's
    producer in its own step; requirements with their own chunking read its raw deltas."""
    return mot.owned_deltas().pipe(
        chunking,
        validate(
            reqs,
            backend=checker,
            ctx=gen_ctx,
            stop=mot.cancel,
            timeout=timeout,
            snapshots=snapshots,
            text=mot.deltas,
            carry=carry,
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
        restore_states(reqs, request.failed.restore)
        continuation = Continuation(
            self.action,
            self.prefix,
            repair=self.policy.repair_instruction(request.reason, request.failed.chunk.text),
            attempt=request.attempt,
        )

        async def begin() -> Observable[ChunkVerdict]:
            mot, gen_ctx = await start_streaming(self.backend, continuation, self.ctx, self.options)
            self.mots.append(mot)
            self.current, self.gen_ctx = mot, gen_ctx
            chunking = chunk(strategy, start_index=request.next_index, start_offset=request.delivered_end)
            return checked_chunks(
                mot, gen_ctx, reqs, chunking, checker, timeout, snapshots=True, carry=request.failed.carry
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
