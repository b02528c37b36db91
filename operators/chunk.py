"""The ``chunk`` operator: text deltas in, :class:`~operators.chunker.Chunk` values out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reactivex import Observable

from engine.core.asyncrx import LoopObservable, Relay
from operators.chunker import Chunk, Chunker
from operators.chunking import ChunkingStrategy, resolve_chunking_strategy

__all__ = ["chunk"]


def chunk(
    strategy: ChunkingStrategy | str = "sentence", *, start_index: int = 0, start_offset: int = 0
) -> Callable[[Observable[str]], Observable[Chunk]]:
    """Cut a stream of deltas into chunks with *strategy* (an instance or an alias).

    Each subscription gets its own :class:`~operators.chunker.Chunker`. The withheld
    trailing fragment is flushed on natural completion only: an error or a disposal
    discards it. A strategy that breaks the chunk rules becomes ``on_error`` (with the
    chunks before it already delivered) and the upstream is disposed.

    *start_index* and *start_offset* continue the numbering and the spans of an
    earlier stream (see :class:`~operators.chunker.Chunker`).
    """
    resolved = resolve_chunking_strategy(strategy)

    def operator(source: Observable[str]) -> Observable[Chunk]:
        return LoopObservable(
            lambda observer: _Chunking(
                observer, Chunker(resolved, start_index=start_index, start_offset=start_offset)
            ).connect(source)
        )

    return operator


class _Chunking(Relay[Chunk]):
    __slots__ = ("chunker",)

    def __init__(self, downstream: Any, chunker: Chunker) -> None:
        super().__init__(downstream)
        self.chunker = chunker

    def on_next(self, delta: str) -> None:
        if self.stopped:
            return
        try:
            chunks = self.chunker.feed(delta)
        except Exception as exc:
            self.fail(exc)
            return
        for c in chunks:
            if self.stopped:
                return
            self.downstream.on_next(c)

    def on_completed(self) -> None:
        if self.stopped:
            return
        try:
            chunks = self.chunker.flush()
        except Exception as exc:
            self.fail(exc)
            return
        for c in chunks:
            if self.stopped:
                return
            self.downstream.on_next(c)
        super().on_completed()
