"""After a retry repaired a failure, Mellea 0.8's handle and the result describe the final outcome.

``streaming_failures`` holds only the failure that ended the run (as in Mellea), and
``failed_early`` / ``failure_reason`` follow it; the failures a retry repaired are in
``retried_failures`` (on the result and the handle) and in the events (``RetryEvent``).
"""

from __future__ import annotations

from typing import Any

import pytest

from backends import ScriptedBackend
from engine import (
    Instruction,
    PartialValidationResult,
    QuickCheckEvent,
    Requirement,
    RetryEvent,
    SimpleContext,
    StreamRetry,
    stream,
)


class NoCapitals(Requirement):
    def __init__(self) -> None:
        super().__init__("No sentence in capitals.")

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        if chunk.isupper():
            return PartialValidationResult("fail", reason=f"{chunk!r} is in capitals")
        return PartialValidationResult("pass")


async def retried_stream(continuation: list[str], max_attempts: int = 2) -> Any:
    backend = ScriptedBackend(["One. ", "TWO. ", "Three. "], continuations=[continuation])
    return await stream(
        Instruction("Count."),
        backend,
        SimpleContext(),
        chunking="sentence",
        requirements=[NoCapitals()],
        as_events=True,
        retry=StreamRetry(max_attempts=max_attempts),
    )


@pytest.mark.asyncio
async def test_a_repaired_failure_is_a_retried_one_not_an_early_failure() -> None:
    async with await retried_stream([" Two. ", "Three."]) as s:
        events = [e async for e in s]
    assert s.completed_normally and s.result.completed
    assert s.failed_early is False and s.failure_reason is None
    assert s.streaming_failures == [] and s.result.streaming_failures == []
    [(req, verdict)] = s.retried_failures
    assert isinstance(req, NoCapitals) and verdict.reason == "'TWO.' is in capitals"
    assert s.result.retried_failures == s.retried_failures
    # Still visible in the events: the failing check, then the retry.
    failing = [e for e in events if isinstance(e, QuickCheckEvent) and not e.passed]
    assert len(failing) == 1 and any(isinstance(e, RetryEvent) for e in events)
    assert s.full_text == "One. Two. Three."


@pytest.mark.asyncio
async def test_a_failure_that_ends_the_run_after_a_retry_is_the_one_reported() -> None:
    async with await retried_stream([" THREE. "]) as s:
        _ = [e async for e in s]
    assert not s.completed_normally and s.failed_early
    [(_, ending)] = s.streaming_failures
    assert ending.reason == "'THREE.' is in capitals"
    assert s.failure_reason == "Streaming validation failed: 'THREE.' is in capitals"
    [(_, repaired)] = s.retried_failures
    assert repaired.reason == "'TWO.' is in capitals"
