"""The ``splice_document`` operator: a retry's new JSON document in, the text that follows the
delivered items out (see :mod:`operators.chunking.json_splice`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reactivex import Observable

from engine.core.asyncrx import LoopObservable, Relay
from operators.chunking.json_splice import JsonSplice

__all__ = ["splice_document"]


def splice_document(splice: JsonSplice) -> Callable[[Observable[str]], Observable[str]]:
    """Feed each delta of the new document to *splice*; pass on the text it returns (deltas
    that add nothing are dropped), and what :meth:`JsonSplice.finish` returns at the natural
    end. *splice* holds one stream's state: subscribe the result once."""

    def operator(source: Observable[str]) -> Observable[str]:
        return LoopObservable(lambda observer: _Splicing(observer, splice).connect(source))

    return operator


class _Splicing(Relay[str]):
    __slots__ = ("splice",)

    def __init__(self, downstream: Any, splice: JsonSplice) -> None:
        super().__init__(downstream)
        self.splice = splice

    def _next(self, delta: str) -> None:
        text = self.splice.feed(delta)
        if text:
            self.downstream.on_next(text)

    def _completed(self) -> None:
        text = self.splice.finish()
        if text and not self.stopped:
            self.downstream.on_next(text)
        self.end(None)
