"""The ``retry_on_fail`` operator: a failing chunk starts a new attempt instead of ending the run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reactivex import Observable, abc

from engine.core.asyncrx import LoopObservable, Subscription, report_unhandled, subscribe
from operators.verdicts import ChunkVerdict, Retrying, RetryRequest, VerdictItem

__all__ = ["failure_reason", "retry_on_fail"]


def retry_on_fail(
    start_attempt: Callable[[RetryRequest], Observable[ChunkVerdict]],
    *,
    max_attempts: int,
    resumable: Callable[[ChunkVerdict, int], bool] | None = None,
) -> Callable[[Observable[ChunkVerdict]], Observable[VerdictItem]]:
    """Pass verdicts through; on a retryable failure with attempts left, switch to a new attempt.

    Placed between ``validate`` and ``cancel_on_fail``. Passing verdicts go straight
    through. A failing verdict whose failures are all ``retryable``, while fewer than
    *max_attempts* attempts (the first included) have run, is not passed on: this
    disposes the current attempt's subscription at once (when its source is a thunk's
    owned delta stream, the generation is cancelled in this call), emits
    :class:`~operators.verdicts.Retrying` (the failing verdict, the new attempt's
    number and the reason), and subscribes to ``start_attempt(request)``: the verdicts
    of a new generation that continues the delivered text. Any other failing verdict
    passes through, so ``cancel_on_fail`` ends the run with its fast path. An error or
    the end of the current attempt is passed on. Operators know no backends: the
    engine supplies *start_attempt*, and *resumable*: whether a new attempt can take over
    after a failing verdict, given the offset where the delivered text ends (a JSON
    document can be resumed only at some places); when it says no, the failure passes
    through as one that is not retryable.
    """
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError(f"retry_on_fail max_attempts must be a whole number >= 1, got {max_attempts!r}")

    def operator(source: Observable[ChunkVerdict]) -> Observable[VerdictItem]:
        def subscribe_fn(observer: Any) -> abc.DisposableBase:
            current: abc.DisposableBase | None = None  # the current attempt's subscription
            attempt = 1
            delivered_end = 0  # offset in the run's output where the delivered text ends
            stopped = False

            def follow(attempt_source: Observable[ChunkVerdict], number: int) -> None:
                nonlocal current

                # Each attempt's callbacks check that it is still the current one: a
                # disposed attempt must never speak again.
                def on_next(verdict: ChunkVerdict) -> None:
                    nonlocal delivered_end
                    if stopped or number != attempt:
                        return
                    if (
                        verdict.passed
                        or attempt >= max_attempts
                        or not verdict.retryable
                        or (resumable is not None and not resumable(verdict, delivered_end))
                    ):
                        if verdict.passed:
                            delivered_end = verdict.chunk.end
                        observer.on_next(verdict)
                        return
                    retry(verdict)

                def on_error(exc: Exception) -> None:
                    if not stopped and number == attempt:
                        observer.on_error(exc)

                def on_completed() -> None:
                    if not stopped and number == attempt:
                        observer.on_completed()

                link = subscribe(attempt_source, on_next, on_error, on_completed)
                if stopped or number != attempt:  # it ended, or moved on, while subscribing
                    link.dispose()
                else:
                    current = link

            def drop_current() -> None:
                nonlocal current
                link, current = current, None
                if link is not None:
                    link.dispose()

            def retry(failed: ChunkVerdict) -> None:
                nonlocal attempt
                attempt += 1
                # Stop the failing attempt first (cancels its generation in this call).
                drop_current()
                reason = failure_reason(failed)
                request = RetryRequest(attempt, failed, reason, delivered_end, failed.chunk.chunk_index)
                try:
                    observer.on_next(Retrying(failed, attempt, reason))
                    if stopped:  # the downstream left on seeing the retry: start nothing
                        return
                    follow(start_attempt(request), attempt)
                except Exception as exc:  # raised downstream or by start_attempt: end the run with it
                    if stopped:
                        report_unhandled(exc, "retry_on_fail: an error after the run was disposed")
                        return
                    dispose()
                    observer.on_error(exc)

            def dispose() -> None:
                nonlocal stopped
                stopped = True
                drop_current()

            follow(source, attempt)
            return Subscription(dispose)

        return LoopObservable(subscribe_fn)

    return operator


def failure_reason(verdict: ChunkVerdict) -> str:
    """Why *verdict* failed, one ``requirement: reason`` per failure, joined by ``"; "``."""
    parts = []
    for req, result in verdict.failures:
        name = req.format_for_llm() or repr(req)
        if result.reason:  # "<requirement>: <reason>", not "<requirement>.: <reason>"
            name = f"{name.rstrip('. ')}: {result.reason}"
        parts.append(name)
    return "; ".join(parts)
