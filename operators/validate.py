"""The ``validate`` operator: per-chunk ``stream_validate`` of every requirement.

``validate`` turns chunks into :class:`~operators.verdicts.ChunkVerdict` values. The
requirements of one chunk run in parallel on the asyncio loop; chunks are validated
strictly in order by one worker task per subscription (``concat_map`` over futures
would start every chunk's validation at once). The first "fail" decides the chunk at
once: the verdict is emitted before the slower siblings are cancelled, so a
downstream ``cancel_on_fail`` stops the generation without waiting for them.
"""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from reactivex import Observable, abc
from reactivex import operators as ops
from reactivex.disposable import Disposable, SingleAssignmentDisposable

from engine.core.context import Context
from engine.core.requirements import PartialValidationResult, Requirement
from operators.chunker import Chunk
from operators.verdicts import CANCELLED, ChunkVerdict

__all__ = ["validate"]


@attrs.frozen
class _End:
    error: Exception | None


def validate(
    requirements: Sequence[Requirement], *, backend: Any, ctx: Context, snapshots: bool = False
) -> Callable[[Observable[Chunk]], Observable[ChunkVerdict]]:
    """Check every chunk against *requirements* (``stream_validate``), in order.

    After a failing verdict nothing later is validated or emitted; the operator
    completes when its upstream does. An exception from a validator (or a result
    that is not a ``PartialValidationResult``) cancels the siblings and becomes
    ``on_error``, after the verdicts of earlier chunks. Disposal cancels the checks
    in flight. With no requirements every chunk passes with no results.

    With *snapshots* every requirement is copied (``copy.copy``) before it checks each
    chunk, and a failing verdict carries those copies as ``restore`` (the state to
    continue from when the failing chunk is retried).
    """
    reqs = tuple(requirements)

    def operator(source: Observable[Chunk]) -> Observable[ChunkVerdict]:
        if not reqs:
            return source.pipe(ops.map(_unchecked))

        def subscribe(
            observer: abc.ObserverBase[ChunkVerdict], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            loop = asyncio.get_running_loop()
            queue: deque[Chunk | _End] = deque()
            worker: asyncio.Task[None] | None = None
            failed = False  # a chunk failed: drop later chunks, still forward the end
            stopped = False  # terminated or disposed: ignore everything

            async def drain() -> None:
                nonlocal worker, failed, stopped
                try:
                    while queue and not stopped:
                        item = queue.popleft()
                        if isinstance(item, _End):
                            stopped = True
                            if item.error is None:
                                observer.on_completed()
                            else:
                                observer.on_error(item.error)
                            return
                        restore = tuple(copy.copy(r) for r in reqs) if snapshots else None
                        verdict = await _check(item, reqs, backend, ctx, emit_failure, restore)
                        if stopped:
                            return
                        if verdict is not None:
                            observer.on_next(verdict)
                except Exception as exc:
                    if not stopped:
                        stopped = True
                        queue.clear()
                        observer.on_error(exc)
                finally:
                    worker = None

            def emit_failure(verdict: ChunkVerdict) -> None:
                # Called from inside the failing validator's task (see _check).
                nonlocal failed
                if stopped:
                    return
                failed = True
                # Later chunks are dropped; the upstream's end still passes.
                ends = [i for i in queue if isinstance(i, _End)]
                queue.clear()
                queue.extend(ends)
                try:
                    observer.on_next(verdict)
                except Exception as exc:
                    dispose()
                    observer.on_error(exc)

            def enqueue(item: Chunk | _End) -> None:
                nonlocal worker
                if stopped or (failed and isinstance(item, Chunk)):
                    return
                queue.append(item)
                if worker is None:
                    worker = loop.create_task(drain())

            def dispose() -> None:
                nonlocal stopped
                stopped = True
                queue.clear()
                upstream.dispose()
                if worker is not None and worker is not asyncio.current_task():
                    worker.cancel()

            upstream = SingleAssignmentDisposable()
            upstream.disposable = source.subscribe(
                enqueue,
                lambda exc: enqueue(_End(exc)),
                lambda: enqueue(_End(None)),
                scheduler=scheduler,
            )
            return Disposable(dispose)

        return Observable(subscribe)

    return operator


def _unchecked(chunk: Chunk) -> ChunkVerdict:
    return ChunkVerdict(chunk, (), ())


async def _check(
    chunk: Chunk,
    reqs: tuple[Requirement, ...],
    backend: Any,
    ctx: Context,
    emit_failure: Callable[[ChunkVerdict], None],
    restore: tuple[Requirement, ...] | None = None,
) -> ChunkVerdict | None:
    """Run every requirement on *chunk* in parallel.

    A "fail" is decided inside the failing validator's own task step: the verdict is
    handed to *emit_failure* there and then (so a downstream ``cancel_on_fail`` stops
    the generation before the loop runs anything else) and the slower siblings are
    cancelled; this then returns ``None``. Otherwise it returns the verdict once every
    requirement has answered, or raises the first validator error after cancelling
    the others.
    """
    loop = asyncio.get_running_loop()
    decided: asyncio.Future[None] = loop.create_future()
    tasks: list[asyncio.Task[PartialValidationResult]] = []
    emitted = False

    async def run(index: int, req: Requirement) -> PartialValidationResult:
        nonlocal emitted
        result = await req.stream_validate(chunk.text, backend=backend, ctx=ctx)
        if _is_fail(result) and not decided.done():
            emitted = True
            results = tuple(result if j == index else _settled_result(task) for j, task in enumerate(tasks))
            # Emit first: a downstream cancel_on_fail cancels the generation in this call,
            # so the backend's task is the first thing the loop runs next.
            emit_failure(ChunkVerdict(chunk, results, reqs, restore))
            if not decided.done():  # the emission may have cancelled the worker (and it)
                decided.set_result(None)
            for j, task in enumerate(tasks):
                if j != index and not task.done():
                    task.cancel()
        return result

    remaining = len(reqs)

    def on_done(task: asyncio.Task[Any]) -> None:
        nonlocal remaining
        remaining -= 1
        if decided.done():
            return
        if remaining == 0 or task.cancelled() or task.exception() is not None or _fails(task.result()):
            decided.set_result(None)

    for i, req in enumerate(reqs):
        task = loop.create_task(run(i, req))
        task.add_done_callback(on_done)
        tasks.append(task)
    try:
        await decided
    finally:
        pending = [t for t in tasks if not t.done()]
        for t in pending:
            t.cancel()
    if emitted:
        for t in tasks:  # retrieve a sibling's late error, if any: the failure decided first
            if t.done() and not t.cancelled():
                t.exception()
        await _settle(pending)
        return None  # emitted by the failing validator itself

    results: list[PartialValidationResult] = []
    for req, task in zip(reqs, tasks, strict=True):
        if task in pending:
            results.append(CANCELLED)
        elif task.cancelled():
            await _settle(pending)
            raise RuntimeError(
                f"{req!r}.stream_validate() was cancelled from inside; it must return a result"
            )
        elif (exc := task.exception()) is not None:
            # Siblings finish cancelling before the error propagates: nothing keeps running.
            await _settle(pending)
            raise exc
        else:
            result = task.result()
            if not isinstance(result, PartialValidationResult):
                await _settle(pending)
                raise TypeError(
                    f"{req!r}.stream_validate() returned {result!r} ({type(result).__name__}); "
                    "return PartialValidationResult('pass' | 'fail' | 'unknown') instead"
                )
            results.append(result)
    return ChunkVerdict(chunk, tuple(results), reqs)


def _settled_result(task: asyncio.Task[Any]) -> PartialValidationResult:
    """A sibling's result at the moment another requirement failed: its answer if it had a
    valid one, else "unknown" (cancelled)."""
    if task.done() and not task.cancelled() and task.exception() is None:
        result = task.result()
        if isinstance(result, PartialValidationResult):
            return result
    return CANCELLED


def _is_fail(result: Any) -> bool:
    return isinstance(result, PartialValidationResult) and result.success == "fail"


def _fails(result: Any) -> bool:
    return not isinstance(result, PartialValidationResult) or result.success == "fail"


async def _settle(tasks: list[asyncio.Task[Any]]) -> None:
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
