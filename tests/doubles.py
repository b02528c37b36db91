"""Test doubles shared by the test files: each defined once, here.

The engine copies every requirement (``copy.copy``) before a run, so a double's records
follow one rule: a record that is reassigned (never mutated) belongs to the copy that made
it, and the caller's original stays untouched; a list that is appended to is shared with
every copy, for what happens to a copy out of the caller's reach.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from backends import ScriptedBackend
from engine import ModelOutputThunk, PartialValidationResult, Requirement, SimpleContext, ValidationResult
from engine.core.asyncrx import from_async_iterable
from engine.core.context import Context


class ScriptedRequirement(Requirement):
    """A requirement that answers each chunk from a script keyed by the chunk's text.

    ``answers`` maps a chunk's text to "pass", "fail" or "unknown" (the default for a
    chunk not in it); each answer comes after ``delay`` seconds (``asyncio.sleep``, so
    the check can be cancelled while it waits); ``validate()`` answers ``final``.

    Records of this instance (reassigned, so each copy keeps its own):
    ``seen`` the chunks it was asked about, in order; ``finished`` the chunks it
    answered; ``failed_at`` the ``time.perf_counter()`` of its first "fail";
    ``validated`` how many times ``validate()`` ran; ``backends`` the backend of each
    call. Shared with every copy (appended): ``cancelled``, the chunks whose check was
    cancelled while it waited.
    """

    def __init__(
        self,
        answers: dict[str, str] | None = None,
        *,
        delay: float = 0.0,
        final: bool = True,
        name: str = "scripted",
    ) -> None:
        super().__init__(name)
        self.answers = answers or {}
        self.delay = delay
        self.final = final
        self.seen: list[str] = []
        self.finished: list[str] = []
        self.failed_at: float | None = None
        self.validated = 0
        self.backends: list[Any] = []
        self.cancelled: list[str] = []

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        self.seen = [*self.seen, chunk]
        self.backends = [*self.backends, backend]
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled.append(chunk)
            raise
        self.finished = [*self.finished, chunk]
        answer = self.answers.get(chunk, "unknown")
        if answer == "fail" and self.failed_at is None:
            self.failed_at = time.perf_counter()
        return PartialValidationResult(answer, reason="scripted")  # type: ignore[arg-type]

    async def validate(
        self, backend: Any, ctx: Any, *, format: Any = None, model_options: Any = None
    ) -> ValidationResult:
        self.validated += 1
        self.backends = [*self.backends, backend]
        return ValidationResult(self.final)


class NoShouting(Requirement):
    """Fails a chunk written in capitals, with the reason "'<chunk>' is in capitals".

    Retryable (the default): the model can write the chunk again calmly. ``validate()``
    passes.
    """

    def __init__(self) -> None:
        super().__init__("Do not shout")

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        if chunk.isupper():
            return PartialValidationResult("fail", reason=f"{chunk!r} is in capitals")
        return PartialValidationResult("pass")

    async def validate(self, backend: Any, ctx: Any, **_: Any) -> ValidationResult:
        return ValidationResult(True)


class OddBackend:
    """A custom backend whose producer yields ``items`` as given, text or not.

    It stands for a third-party backend that breaks the contract (a delta must be
    ``str``). Before each item it yields to the loop; ``sent`` counts the items handed
    out, and ``closed`` turns true once the producer has been closed.
    """

    def __init__(self, items: list[object]) -> None:
        self.items = items
        self.sent = 0
        self.closed = False

    async def produce(self) -> AsyncIterator[object]:
        try:
            for item in self.items:
                await asyncio.sleep(0)
                self.sent += 1
                yield item
        finally:
            self.closed = True

    async def generate_from_context(
        self, action: object, ctx: SimpleContext, *, format: object = None, model_options: object = None
    ) -> tuple[ModelOutputThunk[str], SimpleContext]:
        thunk: ModelOutputThunk[str] = ModelOutputThunk(from_async_iterable(self.produce))  # type: ignore[arg-type]
        return thunk, ctx


class CallRecordingBackend(ScriptedBackend):
    """A ScriptedBackend that also records each call: (action, context, model_options) in ``calls``."""

    def __init__(self, deltas: list[str], **kwargs: Any) -> None:
        super().__init__(deltas, **kwargs)
        self.calls: list[tuple[Any, Context, dict[str, Any] | None]] = []

    async def generate_from_context(
        self,
        action: Any,
        ctx: Context,
        *,
        format: type | None = None,
        model_options: dict[str, Any] | None = None,
    ) -> tuple[ModelOutputThunk[str], Context]:
        self.calls.append((action, ctx, model_options))
        return await super().generate_from_context(action, ctx, format=format, model_options=model_options)
