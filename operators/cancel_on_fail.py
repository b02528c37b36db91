"""The ``cancel_on_fail`` operator."""

from __future__ import annotations

from collections.abc import Callable

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

    def on_next(self, value: VerdictItem) -> None:
        # Relay.on_next's rule written out (one frame a chunk, not two).
        if self.stopped:
            return
        try:
            if not isinstance(value, ChunkVerdict) or value.passed:
                self.downstream.on_next(value)
                return
            upstream, self.upstream = self.upstream, None
            if upstream is not None:
                upstream.dispose()  # the source (and the generation) stops first
            self.downstream.on_next(value)
            self.end(None)
        except Exception as exc:
            self.end(exc)
