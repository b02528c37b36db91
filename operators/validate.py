"""The ``validate`` operator: every requirement checks every chunk; chunks leave in order.

Scheduling, per subscription:

* Each requirement has its own schedule and never waits for the others: it checks
  its chunks in order, one at a time (``Requirement.concurrency`` > 1 lets a stateless
  check run several chunks at once). A fast check runs ahead while a slow judge is
  still on an earlier chunk.
* Each check starts eagerly (:class:`engine.core.eager.Lane`): a ``stream_validate``
  that answers without suspending answers inside the step that delivered the chunk,
  with no task and no loop turn. One that suspends continues in its requirement's
  lane task, under its deadline (``Requirement.timeout``).
* A chunk leaves as a :class:`~operators.verdicts.ChunkVerdict` once every requirement
  has answered it and every earlier chunk has left.
* A "fail" on chunk *k* first calls ``stop`` (the producer's own stop: when the
  source is a live generation, it stops before anything else happens), then drops
  every later chunk and cancels their checks. On the next loop turn the siblings
  still waiting on chunk *k* are cancelled (reported ``"unknown"``, reason
  ``"cancelled"``); those that answered by then keep their real answers. Chunks
  before *k* still finish their checks and leave; then the failing verdict, then
  the end. An earlier failure found later (a slow judge on chunk *j* < *k*) takes
  its place.
* A check that raises ends the run the same way, with the error after the chunks
  before it (``on_error="unknown"`` records it as "unknown" instead). A result that is
  not a ``PartialValidationResult`` is a ``TypeError`` naming the requirement.
* Requirements with their own ``chunking`` re-cut the stream's chunks and check their
  own pieces; at the natural end their withheld fragments are checked in one more
  verdict, which carries no chunk text (``ChunkVerdict.flush``).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Sequence
from typing import Any

from reactivex import Observable, abc

from engine.core import arguments
from engine.core.asyncrx import LoopObservable, Subscription, observe, report_unhandled, subscribe
from engine.core.context import Context
from engine.core.eager import PENDING, DeadlineExceeded, Lane
from engine.core.requirements import PartialValidationResult, Policy, Requirement
from operators.chunking import Chunk, Chunker, ChunkingStrategy, resolve_chunking_strategy
from operators.verdicts import CANCELLED, ChunkVerdict

__all__ = ["validate"]

_UNKNOWN = PartialValidationResult("unknown")
_PASS = PartialValidationResult("pass")


def validate(
    requirements: Sequence[Requirement],
    *,
    backend: Any,
    ctx: Context,
    stop: Callable[[], None] | None = None,
    timeout: float | None = None,
    snapshots: bool = False,
) -> Callable[[Observable[Chunk]], Observable[ChunkVerdict]]:
    """Check every chunk against *requirements* (``stream_validate``); emit verdicts in order.

    *stop* is called first thing, synchronously, when a chunk fails or a check
    raises: pass the producer's stop (``thunk.cancel``) so the generation ends before
    anything else is done. *timeout* is the deadline (seconds) of every check whose
    requirement sets none. With *snapshots*, a failing verdict carries ``restore``:
    each requirement as it was right after the last chunk before the failing one.

    After the failing verdict (always the last one) the operator completes and
    disposes its upstream. Disposal cancels the checks in flight. With no
    requirements every chunk passes with no results.

    Raises:
        ValueError: a requirement's ``chunking`` is an unknown alias.
    """
    arguments.positive_seconds("timeout", timeout)  # before anything starts: a deadline always computes
    reqs = tuple(requirements)
    strategies = tuple(_own_chunking(req) for req in reqs)

    def operator(source: Observable[Chunk]) -> Observable[ChunkVerdict]:
        if not reqs:
            return _unchecked(source)

        def subscribe_fn(observer: Any) -> abc.DisposableBase:
            scheduler = _Scheduler(reqs, strategies, backend, ctx, stop, timeout, snapshots, observer)
            scheduler.connect(source)
            return Subscription(scheduler.dispose)

        return LoopObservable(subscribe_fn)

    return operator


def _own_chunking(req: Requirement) -> ChunkingStrategy | None:
    spec = getattr(req, "chunking", None)
    return None if spec is None else resolve_chunking_strategy(spec)


def _unchecked(source: Observable[Chunk]) -> Observable[ChunkVerdict]:
    def subscribe_fn(observer: Any) -> abc.DisposableBase:
        def on_next(chunk: Chunk) -> None:
            observer.on_next(ChunkVerdict(chunk, (), ()))

        return subscribe(source, on_next, observer.on_error, observer.on_completed)

    return LoopObservable(subscribe_fn)


class _Slot:
    """A chunk waiting to leave, and the answers it has so far."""

    __slots__ = ("chunk", "flush", "missing", "results")

    def __init__(self, chunk: Chunk, n: int, flush: bool = False) -> None:
        self.chunk = chunk
        self.results: list[PartialValidationResult | None] = [None] * n
        self.missing = n
        self.flush = flush


class _Worker:
    """One requirement's schedule: the next chunk it checks, and the lanes continuing its checks."""

    __slots__ = (
        "busy",
        "chunker",
        "concurrency",
        "index",
        "next",
        "on_error",
        "on_timeout",
        "req",
        "snaps",
        "timeout",
    )

    def __init__(
        self, index: int, req: Requirement, strategy: ChunkingStrategy | None, timeout: float | None
    ):
        self.index = index
        self.req = req
        self.chunker = Chunker(strategy) if strategy is not None else None
        self.concurrency = max(1, int(getattr(req, "concurrency", 1) or 1))
        own = getattr(req, "timeout", None)
        self.timeout: float | None = own if own is not None else timeout
        self.on_timeout: Policy = getattr(req, "on_timeout", "fail")
        self.on_error = getattr(req, "on_error", "raise")
        self.next = -1  # the chunk index it checks next (set at the first chunk)
        self.busy: dict[Lane, int] = {}  # lanes continuing a suspended check -> chunk index
        self.snaps: dict[int, Requirement] = {}


class _Scheduler:
    __slots__ = (
        "backend",
        "ctx",
        "end_at",
        "end_error",
        "finish_done",
        "finishing",
        "flushing",
        "idle",
        "loop",
        "next_index",
        "next_start",
        "observer",
        "pending",
        "reqs",
        "snapshots",
        "stop",
        "stopped",
        "upstream",
        "upstream_end",
        "workers",
    )

    def __init__(
        self,
        reqs: tuple[Requirement, ...],
        strategies: tuple[ChunkingStrategy | None, ...],
        backend: Any,
        ctx: Context,
        stop: Callable[[], None] | None,
        timeout: float | None,
        snapshots: bool,
        observer: Any,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.reqs = reqs
        self.backend = backend
        self.ctx = ctx
        self.stop = stop
        self.snapshots = snapshots
        self.observer = observer
        self.workers = [
            _Worker(i, r, s, timeout) for i, (r, s) in enumerate(zip(reqs, strategies, strict=True))
        ]
        # Lanes not continuing a check, shared by every requirement: checks that answer
        # without suspending all run on one lane (one task per run, not per requirement).
        self.idle: list[Lane] = []
        # A list, not a deque: it holds a chunk or two (an empty deque costs 0.6 KiB a run).
        self.pending: list[_Slot] = []
        self.end_at: int | None = None  # the chunk where the run ends (first failure or error)
        self.end_error: BaseException | None = None
        self.finish_done = False
        self.finishing = False  # inside _finish_turn, which emits what is due at its end
        self.upstream_end: tuple[Exception | None] | None = None
        self.flushing = False
        self.next_index = 0  # the index after the last chunk received
        self.next_start = 0  # the offset after the last chunk received
        self.stopped = False  # terminated or disposed
        self.upstream: abc.DisposableBase | None = None

    # -- upstream --------------------------------------------------------------

    def connect(self, source: Observable[Chunk]) -> None:
        self.upstream = observe(source, self)
        if self.stopped:  # it ended while subscribing
            self.upstream.dispose()

    def on_next(self, chunk: Chunk) -> None:
        if self.stopped or (self.end_at is not None and chunk.chunk_index >= self.end_at):
            return
        try:
            self.pending.append(_Slot(chunk, len(self.reqs)))
            self.next_index, self.next_start = chunk.chunk_index + 1, chunk.end
            for worker in self.workers:
                if worker.next < 0:
                    worker.next = chunk.chunk_index
                self._advance(worker)
            self._emit_ready()
        except Exception as exc:  # no exception may vanish: it ends the run
            self._terminate(exc)

    def on_error(self, error: Exception) -> None:
        if self.stopped or self.end_at is not None or self.upstream_end is not None:
            return
        self.upstream_end = (error,)
        try:
            self._emit_ready()
        except Exception as exc:
            self._terminate(exc)

    def on_completed(self) -> None:
        if self.stopped or self.end_at is not None or self.upstream_end is not None:
            return
        self.upstream_end = (None,)
        try:
            self._emit_ready()
        except Exception as exc:
            self._terminate(exc)

    # -- checks ----------------------------------------------------------------

    def _advance(self, worker: _Worker) -> None:
        """Start the worker's next chunks while it has free lanes and chunks to check."""
        pending = self.pending
        while pending and not self.stopped:
            k = worker.next
            base = pending[0].chunk.chunk_index
            if k - base >= len(pending) or len(worker.busy) >= worker.concurrency:
                return
            end_at = self.end_at
            if end_at is not None and k >= end_at:
                return  # the ending chunk's late starters run in the finish turn
            slot = pending[k - base]
            worker.next = k + 1
            self._start(worker, slot)

    def _start(self, worker: _Worker, slot: _Slot) -> None:
        k = slot.chunk.chunk_index
        req = worker.req
        if self.snapshots:
            worker.snaps[k] = copy.copy(req)
        idle = self.idle
        while idle and idle[-1].closed:  # its task was cancelled from outside (asyncio.run shutting down)
            idle.pop()
        lane = idle.pop() if idle else self._new_lane()
        try:
            if slot.flush:
                coro = self._check_own(worker, None)
            elif worker.chunker is not None:
                coro = self._check_own(worker, slot.chunk.gap + slot.chunk.text)
            else:
                coro = req.stream_validate(slot.chunk.text, backend=self.backend, ctx=self.ctx)
                if not hasattr(coro, "send"):
                    raise _not_async(req, coro)
            deadline = None if worker.timeout is None else self.loop.time() + worker.timeout
            result = lane.start(coro, deadline=deadline)
        except Exception as exc:
            idle.append(lane)
            self._answer(worker, k, None, exc)
            return
        if result is PENDING:
            worker.busy[lane] = k
            return
        idle.append(lane)
        self._answer(worker, k, result, None)

    def _new_lane(self) -> Lane:
        return Lane(self.loop, self._lane_done)

    def _lane_done(self, lane: Lane, result: Any, error: BaseException | None) -> None:
        # Runs in the lane's task (or inside a cancel): nothing may escape from here.
        for worker in self.workers:
            k = worker.busy.pop(lane, None)
            if k is not None:
                if not lane.closed:
                    self.idle.append(lane)
                try:
                    self._answer(worker, k, result, error)
                except Exception as exc:
                    self._terminate(exc)
                return

    async def _check_own(self, worker: _Worker, text: str | None) -> PartialValidationResult:
        """Re-cut *text* with the requirement's own chunking and check each piece in order
        (``None``: the natural end, check the withheld fragment)."""
        assert worker.chunker is not None
        pieces = worker.chunker.flush() if text is None else worker.chunker.feed(text)
        passed = bool(pieces)
        for piece in pieces:
            result = await worker.req.stream_validate(piece.text, backend=self.backend, ctx=self.ctx)
            if not isinstance(result, PartialValidationResult):
                raise _bad_result(worker.req, result)
            if result.success == "fail":
                return result
            passed = passed and result.success == "pass"
        return _PASS if passed else _UNKNOWN

    def _answer(self, worker: _Worker, k: int, result: Any, error: BaseException | None) -> None:
        if self.stopped:
            return
        if error is not None:
            if isinstance(error, asyncio.CancelledError):
                result = CANCELLED
            elif isinstance(error, DeadlineExceeded):
                result = PartialValidationResult(
                    worker.on_timeout, reason=f"timed out after {worker.timeout:g} s"
                )
            elif worker.on_error == "unknown" and isinstance(error, Exception):
                reason = f"check raised {type(error).__name__}: {error}"
                result = PartialValidationResult("unknown", reason=reason)
            else:
                self._end(k, error)
                # An error after the finish turn (a cancelled check raising on its way out)
                # may be the last answer the ending verdict waits for.
                if self.finish_done and not self.finishing:
                    self._emit_ready()
                return
        elif not isinstance(result, PartialValidationResult):
            self._end(k, _bad_result(worker.req, result))
            return
        failed = result.success == "fail"
        if failed:
            # The fast path: stop the producer first; everything else waits for the next turn.
            self._end(k, None)
        slot = self._slot(k)
        if slot is not None and slot.results[worker.index] is None:
            slot.results[worker.index] = result
            slot.missing -= 1
        if failed:
            return
        self._advance(worker)
        self._emit_ready()

    def _slot(self, k: int) -> _Slot | None:
        pending = self.pending
        if not pending:
            return None
        i = k - pending[0].chunk.chunk_index
        return pending[i] if 0 <= i < len(pending) else None

    # -- the end -------------------------------------------------------------------

    def _end(self, k: int, error: BaseException | None) -> None:
        """The run ends at chunk *k* (a failure, or *error*): stop the producer now; the
        rest (dropping later chunks, cancelling checks, the verdict) waits for the next turn."""
        end_at = self.end_at
        if end_at is not None and end_at <= k:
            if error is not None:
                self._late_error(k, error)
            return
        later_error = self.end_error
        self.end_at, self.end_error = k, error
        if isinstance(later_error, Exception) and later_error is not error:  # it must not vanish
            report_unhandled(
                later_error, "validate: a check raised on a chunk after the one the run ended at"
            )
        if end_at is None:
            if self.stop is not None:
                try:
                    self.stop()
                except Exception as exc:  # a broken stop must not hide: the run's error, or a note on it
                    if error is None:
                        self.end_error = exc
                    else:
                        error.add_note(f"stopping the generation also failed: {type(exc).__name__}: {exc}")
            self.loop.call_soon(self._finish_turn)
        else:  # an earlier chunk failed after a later one: settle it on a turn of its own
            self.finish_done = False
            self.loop.call_soon(self._finish_turn)

    def _late_error(self, k: int, error: BaseException) -> None:
        """*error* from a check of chunk *k*, at or after the chunk the run already ends at
        (until the ending verdict leaves, which stops the scheduler before this)."""
        first = self.end_error
        if error is first:  # one exception object shared by two checks is one error
            return
        if k == self.end_at and first is None:
            # A check raised on the chunk another one failed: the error ends the run (as it
            # would have alone), not the failure.
            self.end_error = error
        elif k == self.end_at and first is not None:
            # Two checks raised on one chunk: the run raises the first, which tells of the other.
            first.add_note(f"another check also raised on this chunk: {type(error).__name__}: {error}")
        elif isinstance(error, Exception):  # after the run's end was settled: it must not vanish
            report_unhandled(error, "validate: a check raised after the run's end was settled")

    def _finish_turn(self) -> None:
        """The loop turn after a stop: drop what follows the ending chunk, settle its
        missing answers, resume the checks of earlier chunks, and emit what is due."""
        if self.stopped or self.finish_done:
            return
        self.finish_done = True
        self.finishing = True
        try:
            k = self.end_at
            assert k is not None
            pending = self.pending
            while pending and pending[-1].chunk.chunk_index > k:
                pending.pop()
            error = self.end_error is not None
            for worker in self.workers:
                for lane, kk in list(worker.busy.items()):
                    if kk > k or (error and kk == k):
                        lane.cancel()
            slot = self._slot(k)
            if slot is not None and not error:
                # Siblings that had not started the failing chunk check it now (one that
                # answers without waiting gives its real answer); any still waiting on
                # I/O is cancelled and reported "cancelled".
                for worker in self.workers:
                    if slot.results[worker.index] is None and worker.next == k and not self.stopped:
                        worker.next = k + 1
                        self._start(worker, slot)
                for worker in self.workers:
                    if self.stopped or slot.results[worker.index] is not None:
                        continue
                    for lane, kk in list(worker.busy.items()):
                        if kk == k:
                            lane.cancel()
                    if slot.results[worker.index] is None:  # still waiting, or never reached it
                        slot.results[worker.index] = CANCELLED
                        slot.missing -= 1
            for worker in self.workers:
                self._advance(worker)  # checks of chunks before the ending one go on
            self.finishing = False
            self._emit_ready()
        except Exception as exc:
            self._terminate(exc)
        finally:
            self.finishing = False

    def _emit_ready(self) -> None:
        """Emit every chunk that has all its answers, in order; then the end, if it is due."""
        pending = self.pending
        observer = self.observer
        while pending and not self.stopped:
            slot = pending[0]
            k = slot.chunk.chunk_index
            if k == self.end_at:
                if not self.finish_done or any(kk >= k for w in self.workers for kk in w.busy.values()):
                    return  # cancelled checks finish cancelling first: nothing outlives the run
                if self.end_error is not None:
                    self._terminate(self.end_error)
                    return
                if slot.missing:
                    return
                del pending[0]
                verdict = self._verdict(slot, failing=True)
                try:
                    observer.on_next(verdict)
                except Exception as exc:
                    self._terminate(exc)
                    return
                self._terminate(None)
                return
            if slot.missing:
                return
            del pending[0]
            verdict = self._verdict(slot, failing=False)
            try:
                observer.on_next(verdict)
            except Exception as exc:
                self._terminate(exc)
                return
        if self.stopped or pending or self.upstream_end is None or self.end_at is not None:
            return
        error = self.upstream_end[0]
        if error is None and not self.flushing and any(w.chunker is not None for w in self.workers):
            self._flush()
            return
        self._terminate(error)

    def _flush(self) -> None:
        """Natural end with own-chunking requirements: one more verdict for their withheld fragments."""
        self.flushing = True
        index = self.next_index
        slot = _Slot(Chunk("", index, self.next_start, self.next_start), len(self.reqs), flush=True)
        self.pending.append(slot)
        for worker in self.workers:
            if worker.chunker is None:
                slot.results[worker.index] = _UNKNOWN
                slot.missing -= 1
            else:
                worker.next = index
        for worker in self.workers:
            if worker.chunker is not None:
                self._advance(worker)
        self._emit_ready()

    def _verdict(self, slot: _Slot, *, failing: bool) -> ChunkVerdict:
        k = slot.chunk.chunk_index
        results = tuple(r if r is not None else CANCELLED for r in slot.results)
        restore = None
        if self.snapshots:
            if failing:
                restore = tuple(w.snaps.get(k, w.req) for w in self.workers)
            for w in self.workers:
                w.snaps.pop(k, None)
        return ChunkVerdict(slot.chunk, results, self.reqs, flush=slot.flush, restore=restore)

    def _terminate(self, error: BaseException | None) -> None:
        if self.stopped:
            if isinstance(error, Exception):
                report_unhandled(error, "validate: an error after the end")
            return
        self.dispose()
        try:
            if error is None:
                self.observer.on_completed()
            else:
                self.observer.on_error(error)
        except Exception as exc:
            if exc is not error:
                report_unhandled(exc, "validate: the downstream raised when the stream ended")

    def dispose(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.pending.clear()
        for lane in self.idle:
            lane.close()
        self.idle.clear()
        for worker in self.workers:
            for lane in worker.busy:
                lane.close()
            worker.busy.clear()
            worker.snaps.clear()
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.dispose()


def _bad_result(req: Requirement, result: Any) -> TypeError:
    return TypeError(
        f"{req!r}.stream_validate() returned {result!r} ({type(result).__name__}); "
        "return PartialValidationResult('pass' | 'fail' | 'unknown') instead"
    )


def _not_async(req: Requirement, returned: Any) -> TypeError:
    return TypeError(
        f"{req!r}.stream_validate() returned {type(returned).__name__}, not a coroutine: "
        "declare it `async def stream_validate(self, chunk, *, backend, ctx)`"
    )
