"""The ``chunk`` operator: text deltas in, :class:`~operators.chunking.Chunk` values out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reactivex import Observable

from engine.core.asyncrx import LoopObservable, Relay
from operators.chunking import Chunk, Chunker, ChunkingStrategy, RawDeltas, resolve_chunking_strategy

__all__ = ["chunk"]


def chunk(
    strategy: ChunkingStrategy | str | None = "sentence",
    *,
    start_index: int = 0,
    start_offset: int = 0,
    resume: str = "",
) -> Callable[[Observable[str]], Observable[Chunk]]:
    """Cut a stream of deltas into chunks with *strategy* (an instance or an alias); with
    ``None``, every delta is a chunk (:class:`~operators.chunking.RawDeltas`).

    Each subscription gets its own :class:`~operators.chunking.Chunker`. The withheld
    trailing fragment is flushed on natural completion only: an error or a disposal
    discards it. A strategy that breaks the chunk rules becomes ``on_error`` (with the
    chunks before it already delivered) and the upstream is disposed.

    *start_index* and *start_offset* continue the numbering and the spans of an
    earlier stream (see :class:`~operators.chunking.Chunker`). *resume* is that earlier
    stream's text, from *start_offset* on, when the strategy must read it to go on (a JSON
    document's nesting): each chunker reads it first (``Chunker.resume``), releasing
    nothing, so the deltas' offsets count from ``start_offset + len(resume)``.
    """
    resolved = RawDeltas() if strategy is None else resolve_chunking_strategy(strategy)

    def operator(source: Observable[str]) -> Observable[Chunk]:
        return LoopObservable(
            lambda observer: _Chunking(
                observer, _chunker(resolved, start_index, start_offset, resume)
            ).connect(source)
        )

    return operator


def _chunker(strategy: ChunkingStrategy, start_index: int, start_offset: int, resume: str) -> Chunker:
    chunker = Chunker(strategy, start_index=start_index, start_offset=start_offset)
    chunker.resume(resume)
    return chunker


class _Chunking(Relay[Chunk]):
    __slots__ = ("chunker",)

    def __init__(self, downstream: Any, chunker: Chunker) -> None:
        super().__init__(downstream)
        self.chunker = chunker

    def on_next(self, value: str) -> None:
        # Relay.on_next's rule written out (every delta passes here: one frame, not two).
        if self.stopped:
            return
        try:
            for c in self.chunker.feed(value):
                if self.stopped:
                    return
                self.downstream.on_next(c)
        except Exception as exc:
            self.end(exc)

    def _completed(self) -> None:
        for c in self.chunker.flush():
            if self.stopped:
                return
            self.downstream.on_next(c)
        self.end(None)
