"""The ``chunk`` operator: text deltas in, :class:`~operators.chunker.Chunk` values out."""

from __future__ import annotations

from collections.abc import Callable

from reactivex import Observable, abc

from engine.core.asyncrx import Downstream
from operators.chunker import Chunk, Chunker
from operators.chunking import ChunkingStrategy, resolve_chunking_strategy

__all__ = ["chunk"]


def chunk(strategy: ChunkingStrategy | str = "sentence") -> Callable[[Observable[str]], Observable[Chunk]]:
    """Cut a stream of deltas into chunks with *strategy* (an instance or an alias).

    Each subscription gets its own :class:`~operators.chunker.Chunker`. The withheld
    trailing fragment is flushed on natural completion only: an error or a disposal
    discards it. A strategy that breaks the chunk rules, or a stage below raising while
    it takes a chunk, becomes ``on_error`` (with the chunks before it already
    delivered) and the upstream is disposed first.
    """
    resolved = resolve_chunking_strategy(strategy)

    def operator(source: Observable[str]) -> Observable[Chunk]:
        def subscribe(
            observer: abc.ObserverBase[Chunk], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            chunker = Chunker(resolved)
            out: Downstream[Chunk] = Downstream(observer)

            def on_next(delta: str) -> None:
                for c in chunker.feed(delta):
                    out.on_next(c)

            def on_completed() -> None:
                for c in chunker.flush():
                    out.on_next(c)
                out.on_completed()

            out.upstream.disposable = source.subscribe(
                out.guard(on_next), out.on_error, out.guard(on_completed), scheduler=scheduler
            )
            return out.upstream

        return Observable(subscribe)

    return operator
