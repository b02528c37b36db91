"""The ``chunk`` operator: text deltas in, :class:`~operators.chunker.Chunk` values out."""

from __future__ import annotations

from collections.abc import Callable

from reactivex import Observable, abc
from reactivex.disposable import SingleAssignmentDisposable

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
        def subscribe(
            observer: abc.ObserverBase[Chunk], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            chunker = Chunker(resolved, start_index=start_index, start_offset=start_offset)
            upstream = SingleAssignmentDisposable()

            def on_next(delta: str) -> None:
                try:
                    chunks = chunker.feed(delta)
                except Exception as exc:
                    upstream.dispose()
                    observer.on_error(exc)
                    return
                for c in chunks:
                    observer.on_next(c)

            def on_completed() -> None:
                try:
                    chunks = chunker.flush()
                except Exception as exc:
                    observer.on_error(exc)
                    return
                for c in chunks:
                    observer.on_next(c)
                observer.on_completed()

            upstream.disposable = source.subscribe(
                on_next, observer.on_error, on_completed, scheduler=scheduler
            )
            return upstream

        return Observable(subscribe)

    return operator
