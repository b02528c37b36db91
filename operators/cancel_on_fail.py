"""The ``cancel_on_fail`` operator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reactivex import Observable

from engine.core.asyncrx import LoopObservable, Relay
from operators.verdicts import ChunkVerdict, VerdictItem

__all__ = ["cancel_on_fail"]


def cancel_on_fail() -> Callable[[Observable[VerdictItem]], Observable[VerdictItem]]:
    """Pass verdicts until the first failing one; then stop the source, pass it on, and complete.

    A ``Retrying`` marker (from ``retry_on_fail``) is not a failing verdict: it passes.

    ``take_while(passed, inclusive=True)``, with the upstream disposed *before* the
    failing verdict goes downstream, so when the source is a thunk's owned delta
    stream the generation is cancelled before any event is built. (``validate``
    given ``stop=`` has already stopped the producer in the failing check's own step,
    and ends after its failing verdict; this operator keeps a hand-composed pipeline
    without ``stop=`` just as prompt.)
    """

    def operator(source: Observable[VerdictItem]) -> Observable[VerdictItem]:
        return LoopObservable(lambda observer: _CancelOnFail(observer).connect(source))

    return operator


class _CancelOnFail(Relay[VerdictItem]):
    __slots__ = ()

    def on_next(self, verdict: VerdictItem) -> None:
        if self.stopped:
            return
        if not isinstance(verdict, ChunkVerdict) or verdict.passed:
            self.downstream.on_next(verdict)
            return
        downstream: Any = self.downstream
        self.dispose()  # the source (and the generation) stops first
        downstream.on_next(verdict)
        downstream.on_completed()
