"""``ScriptedBackend``: a deterministic token source for tests, demos and benchmarks.

It is a real :class:`~engine.core.backend.Backend`: each generation is an asyncio task
reading an async generator through the same bridge the HTTP backends use, so
cancellation reaches it exactly as it would reach a server connection. Every
generation is recorded in ``backend.generations``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any

from engine.core.asyncrx import from_async_iterable
from engine.core.context import Context
from engine.core.continuation import Continuation, JsonContinuation
from engine.core.generation import GenerationInfo
from engine.core.options import ModelOption
from engine.core.thunk import ModelOutputThunk

__all__ = ["ScriptedBackend"]


class ScriptedBackend:
    """Replays *deltas* for every generation, *delay* seconds apart, then raises *error* if given.

    With ``delay=0`` the producer still yields to the event loop between deltas, as
    a network read would. Without ``ModelOption.STREAM`` the whole text arrives as one
    delta after the same total time.

    *continuations* script the retries of a run with ``retry=StreamRetry(...)``: a
    generation of a :class:`~engine.core.continuation.Continuation` for attempt *n*
    replays ``continuations[n - 2]`` (the last one for later attempts). Without
    *continuations* it goes on as a model continues: *deltas* from right after the
    continuation's prefix (the text already delivered), when the script begins with that
    prefix, else the whole script (a :class:`~engine.core.continuation.JsonContinuation`,
    which asks for a new document, gets the whole script). Its record in ``generations``
    keeps what it was asked:
    ``extra["attempt"]``, ``extra["continuation_prefix"]`` and ``extra["repair"]``.
    """

    provider = "scripted"
    """The name its generations and telemetry give the provider, as the HTTP backends' ``provider``."""

    def __init__(
        self,
        deltas: Sequence[str],
        *,
        delay: float = 0.0,
        error: Exception | None = None,
        model_id: str = "scripted",
        continuations: Sequence[Sequence[str]] = (),
    ) -> None:
        if isinstance(deltas, str):
            raise TypeError(
                "ScriptedBackend takes a list of delta strings, not one string; "
                "pass [text] for a single delta or list(text) for one character each"
            )
        if any(isinstance(c, str) for c in continuations):
            raise TypeError(
                "ScriptedBackend continuations take one list of delta strings per retry attempt, "
                "e.g. continuations=[[' Second try.'], [' Third try.']]"
            )
        if delay < 0:
            raise ValueError(f"ScriptedBackend delay must be >= 0 seconds, got {delay!r}")
        self.deltas = list(deltas)
        self.continuations = [list(c) for c in continuations]
        self.delay = delay
        self.error = error
        self.model_id = model_id
        self.generations: list[GenerationInfo] = []
        """One record per generation started, oldest first."""

    async def generate_from_context(
        self,
        action: Any,
        ctx: Context,
        *,
        format: type | None = None,
        model_options: dict[str, Any] | None = None,
    ) -> tuple[ModelOutputThunk[str], Context]:
        """Start replaying the script now; return the lazy thunk and the new context."""
        stream = bool((model_options or {}).get(ModelOption.STREAM, False))
        generation = GenerationInfo(model=self.model_id, provider=self.provider)
        generation.extra["streaming"] = stream
        deltas = self.deltas
        if isinstance(action, (Continuation, JsonContinuation)):
            prefix = action.prefix if isinstance(action, Continuation) else ""
            generation.extra["attempt"] = action.attempt
            generation.extra["continuation_prefix"] = prefix
            generation.extra["repair"] = action.repair
            if self.continuations:
                deltas = self.continuations[min(action.attempt - 2, len(self.continuations) - 1)]
            else:
                deltas = _after(deltas, prefix)
        self.generations.append(generation)
        source = from_async_iterable(lambda: self._produce(generation, stream, deltas))
        thunk: ModelOutputThunk[str] = ModelOutputThunk(source, generation=generation)
        return thunk, ctx.add(action).add(thunk)

    async def _produce(
        self, generation: GenerationInfo, stream: bool, deltas: list[str]
    ) -> AsyncIterator[str]:
        finished = False
        try:
            if stream:
                for delta in deltas:
                    await asyncio.sleep(self.delay)
                    generation.deltas_sent += 1
                    yield delta
            else:
                await asyncio.sleep(self.delay * len(deltas))
                generation.deltas_sent += 1
                yield "".join(deltas)
            finished = True
        finally:
            if not finished:
                generation.cancelled_at = time.perf_counter()
        if self.error is not None:
            generation.done_reason = "error"
            raise self.error
        generation.done_reason = "stop"

    def __repr__(self) -> str:
        return f"ScriptedBackend({len(self.deltas)} deltas, delay={self.delay}, model_id={self.model_id!r})"

    async def aclose(self) -> None:
        """Nothing to release: a generation holds no connection, and the backend can still
        generate. There so that ``async with`` and :meth:`Session.aclose` treat it as they
        treat the HTTP backends. Idempotent."""

    async def __aenter__(self) -> ScriptedBackend:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _after(deltas: list[str], prefix: str) -> list[str]:
    """The deltas that follow *prefix* in the text *deltas* make (the one it ends inside cut to
    its rest); all of *deltas* when their text does not begin with *prefix*."""
    if not "".join(deltas).startswith(prefix):
        return deltas
    consumed = 0
    for index, delta in enumerate(deltas):
        if consumed + len(delta) > len(prefix):
            return [delta[len(prefix) - consumed :], *deltas[index + 1 :]]
        consumed += len(delta)
    return []
