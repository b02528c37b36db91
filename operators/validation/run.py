"""The coordinator of one subscription of ``validate``: checks started, answers collected,
verdicts emitted in order, and the end of the run (see :mod:`operators.validate` for the rules).

Everything a run without own chunkings does per chunk and per check happens in the methods
of :class:`ValidationRun` itself (the benchmarks count microseconds from a verdict to the
producer's stop): its lane handling is inlined in ``_start``, and requirements with their
own chunking are handed to :class:`~operators.validation.own_chunking.OwnChunkingRun`,
which a run without them never creates.
"""

from __future__ import annotations

import asyncio
import copy
import operator
from collections.abc import Callable
from typing import Any

from reactivex import Observable, abc

from engine.core.asyncrx import observe, report_unhandled
from engine.core.context import Context
from engine.core.eager import PENDING, DeadlineExceeded, Lane
from engine.core.requirements import PartialValidationResult, Requirement
from operators.chunking import Chunk, ChunkingStrategy
from operators.validation.errors import bad_result, not_async
from operators.validation.own_chunking import OwnChunkingRun
from operators.validation.state import Checker, PendingChunk
from operators.verdicts import CANCELLED, ChunkVerdict


class ValidationRun(abc.DisposableBase):
    """One subscription of :func:`~operators.validate.validate`: it starts each requirement's
    checks on the chunks it receives, collects their answers, and emits the verdicts in order.

    It is the observer of the chunks. Its answers arrive from the checks' lanes
    (:class:`~engine.core.eager.Lane`); the end of the run (a failure or an error) stops the
    producer at once and settles the rest on the next loop turn (``_finish_turn``).
    """

    __slots__ = (
        "backend",
        "checkers",
        "ctx",
        "end_at",
        "end_error",
        "finish_done",
        "finishing",
        "idle",
        "last_results",
        "loop",
        "next_index",
        "observer",
        "own",
        "pending",
        "reqs",
        "snapshots",
        "stop",
        "stopped",
        "upstream",
        "upstream_end",
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
        carry: tuple[tuple[int, str] | None, ...],
        start_index: int = 0,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.reqs = reqs
        self.backend = backend
        self.ctx = ctx
        self.stop = stop
        self.snapshots = snapshots
        self.observer = observer
        self.checkers = [
            Checker(i, r, s, timeout, c)
            for i, (r, s, c) in enumerate(zip(reqs, strategies, carry, strict=False))
        ]
        # The checkers with their own chunking (none in the common case: nothing of theirs runs).
        own = [w for w in self.checkers if w.own is not None]
        self.own = OwnChunkingRun(self, own, carry) if own else None
        # Lanes not continuing a check, shared by every requirement: checks that answer
        # without suspending all run on one lane (one task per run, not per requirement).
        self.idle: list[Lane] = []
        # A list, not a deque: it holds a chunk or two (an empty deque costs 0.6 KiB a run).
        self.pending: list[PendingChunk] = []
        self.end_at: int | None = None  # the chunk where the run ends (first failure or error)
        self.end_error: BaseException | None = None
        self.finish_done = False
        self.finishing = False  # inside _finish_turn, which emits what is due at its end
        self.upstream_end: tuple[Exception | None] | None = None
        self.next_index = start_index  # the index after the last chunk received
        self.last_results: tuple[PartialValidationResult, ...] = ()  # the last verdict's results
        self.stopped = False  # terminated or disposed
        self.upstream: abc.DisposableBase | None = None

    # -- upstream --------------------------------------------------------------

    def connect(self, source: Observable[Chunk], text: Observable[str] | None) -> None:
        """Subscribe to the chunks (this run is their observer), then to the raw *text*."""
        self.upstream = observe(source, self)
        if self.stopped:  # it ended while subscribing
            self.upstream.dispose()
            return
        if self.own is not None and text is not None:
            self.own.connect(text)

    def on_next(self, chunk: Chunk) -> None:
        if self.stopped or (self.end_at is not None and chunk.chunk_index >= self.end_at):
            return
        try:
            self.pending.append(PendingChunk(chunk, len(self.reqs)))
            self.next_index = chunk.chunk_index + 1
            if self.own is not None:
                self.own.on_chunk(chunk)
            for checker in self.checkers:
                if checker.next < 0:
                    checker.next = chunk.chunk_index
                self._advance(checker)
            self.emit_ready()
        except Exception as exc:  # no exception may vanish: it ends the run
            self.terminate(exc)

    def on_error(self, error: Exception) -> None:
        if self.stopped or self.end_at is not None or self.upstream_end is not None:
            return
        self.upstream_end = (error,)
        try:
            if self.own is not None:  # the text received is all there is: judge the chunks' last pieces
                self.own.flush(tail_slot=False)
            self.emit_ready()
        except Exception as exc:
            self.terminate(exc)

    def on_completed(self) -> None:
        if self.stopped or self.end_at is not None or self.upstream_end is not None:
            return
        self.upstream_end = (None,)
        try:
            if self.own is not None:
                self.own.flush(tail_slot=True)
            self.emit_ready()
        except Exception as exc:
            self.terminate(exc)

    # -- checks ----------------------------------------------------------------

    def _advance(self, checker: Checker) -> None:
        """Start the checker's next chunks while it has free lanes and chunks to check."""
        if checker.own is not None:
            if self.own is not None:  # None once the run has stopped: nothing left to judge
                self.own.pump(checker)
            return
        pending = self.pending
        while pending and not self.stopped:
            k = checker.next
            base = pending[0].chunk.chunk_index
            if k - base >= len(pending) or len(checker.busy) >= checker.concurrency:
                return
            end_at = self.end_at
            if end_at is not None and k >= end_at:
                return  # the ending chunk's late starters run in the finish turn
            slot = pending[k - base]
            checker.next = k + 1
            if slot.results[checker.index] is None:
                self._start(checker, slot)

    def take_lane(self) -> Lane:
        """An idle lane, or a new one (``_start`` inlines this on the hot path)."""
        idle = self.idle
        while idle and idle[-1].closed:  # its task was cancelled from outside (asyncio.run shutting down)
            idle.pop()
        return idle.pop() if idle else Lane(self.loop, self._lane_done)

    def give_back(self, lane: Lane) -> None:
        """A lane that finished a check: idle again, unless the run has stopped (nothing may
        return to a stopped run: its idle lanes were already closed)."""
        if self.stopped or lane.closed:
            lane.close()
        else:
            self.idle.append(lane)

    def _start(self, checker: Checker, slot: PendingChunk) -> None:
        k = slot.chunk.chunk_index
        req = checker.req
        if self.snapshots:
            checker.snaps[k] = copy.copy(req)
        idle = self.idle  # the hot path: take_lane and give_back inlined
        while idle and idle[-1].closed:  # its task was cancelled from outside (asyncio.run shutting down)
            idle.pop()
        lane = idle.pop() if idle else Lane(self.loop, self._lane_done)
        try:
            coro = req.stream_validate(slot.chunk, backend=self.backend, ctx=self.ctx)  # a Chunk is its text
            if not hasattr(coro, "send"):
                raise not_async(req, coro)
            deadline = None if checker.timeout is None else self.loop.time() + checker.timeout
            result = lane.start(coro, deadline=deadline)
        except Exception as exc:
            self.give_back(lane)
            self._answer(checker, k, None, exc)
            return
        if self.stopped:  # the check stopped the run in its first step: nothing may return to it
            lane.close()
            return
        if result is PENDING:
            checker.busy[lane] = k
            return
        idle.append(lane)
        if isinstance(result, PartialValidationResult) and result.success != "fail":
            # Answered in its first step, so inside _advance or _finish_turn, whose callers go
            # on with this checker's next chunks and emit what is due: record the answer only
            # (what _answer would do, without its _advance and emit_ready a check).
            i = checker.index
            if slot.results[i] is None:
                slot.results[i] = result
                slot.missing -= 1
            return
        self._answer(checker, k, result, None)

    def _lane_done(self, lane: Lane, result: Any, error: BaseException | None) -> None:
        # Runs in the lane's task (or inside a cancel): nothing may escape from here.
        for checker in self.checkers:
            k = checker.busy.pop(lane, None)
            if k is not None:
                self.give_back(lane)
                try:
                    if checker.own is not None:
                        own = self.own
                        assert own is not None
                        own.answer(checker, result, error)
                        if not self.stopped:
                            own.pump(checker)
                            if not self.finishing:
                                self.emit_ready()
                    else:
                        self._answer(checker, k, result, error)
                except Exception as exc:
                    self.terminate(exc)
                return

    def settle(
        self, checker: Checker, k: int | None, result: Any, error: BaseException | None
    ) -> PartialValidationResult | None:
        """The answer a check of chunk *k* gave, or what its error or deadline counts as;
        ``None`` when it ends the run instead (the error, or a result of the wrong type).
        *k* ``None``: a piece after the last chunk (an error there ends the run at the text
        after the last chunk)."""
        if error is not None:
            if isinstance(error, asyncio.CancelledError):
                return CANCELLED
            if isinstance(error, DeadlineExceeded):
                return PartialValidationResult(
                    checker.on_timeout, reason=f"timed out after {checker.timeout:g} s"
                )
            if checker.on_error == "unknown" and isinstance(error, Exception):
                reason = f"check raised {type(error).__name__}: {error}"
                return PartialValidationResult("unknown", reason=reason)
            if k is None:  # a piece after the last chunk: the error ends the run at its text
                own = self.own
                assert own is not None
                k = own.add_tail_slot().chunk.chunk_index
            self.end(k, error)
            # An error after the finish turn (a cancelled check raising on its way out)
            # may be the last answer the ending verdict waits for.
            if self.finish_done and not self.finishing:
                self.emit_ready()
            return None
        if not isinstance(result, PartialValidationResult):
            if k is None:
                own = self.own
                assert own is not None
                k = own.add_tail_slot().chunk.chunk_index
            self.end(k, bad_result(checker.req, result))
            return None
        return result

    def _answer(self, checker: Checker, k: int, result: Any, error: BaseException | None) -> None:
        if self.stopped:
            return
        if error is not None or not isinstance(result, PartialValidationResult):
            result = self.settle(checker, k, result, error)
            if result is None:
                return
        failed = result.success == "fail"
        if failed:
            # The fast path: stop the producer first; everything else waits for the next turn.
            self.end(k, None)
        slot = self.pending_at(k)
        if slot is not None and slot.results[checker.index] is None:
            slot.results[checker.index] = result
            slot.missing -= 1
        if failed:
            return
        self._advance(checker)
        self.emit_ready()

    def pending_at(self, k: int) -> PendingChunk | None:
        """Chunk *k*, if it is waiting to leave."""
        pending = self.pending
        if not pending:
            return None
        i = k - pending[0].chunk.chunk_index
        return pending[i] if 0 <= i < len(pending) else None

    # -- the end -------------------------------------------------------------------

    def end(self, k: int, error: BaseException | None) -> None:
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
        (until the ending verdict leaves, which stops the run before this)."""
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
            for checker in self.checkers:
                for lane, kk in list(checker.busy.items()):
                    if kk > k or (error and kk == k):
                        lane.cancel()
            slot = self.pending_at(k)
            if slot is not None and not error:
                # Siblings that had not started the failing chunk check it now (one that
                # answers without waiting gives its real answer); any still waiting on
                # I/O is cancelled and reported "cancelled". (An own chunking judges only
                # the pieces the chunks before it need.)
                for checker in self.checkers:
                    if (
                        checker.own is None
                        and slot.results[checker.index] is None
                        and checker.next == k
                        and not self.stopped
                    ):
                        checker.next = k + 1
                        self._start(checker, slot)
                own = self.own
                if own is not None:
                    for checker in own.checkers:
                        if slot.results[checker.index] is None and not self.stopped:
                            own.pump(checker, ending=True)
                for checker in self.checkers:
                    if self.stopped or slot.results[checker.index] is not None:
                        continue
                    for lane, kk in list(checker.busy.items()):
                        if kk == k:
                            lane.cancel()
                    if slot.results[checker.index] is None:  # still waiting, or never reached it
                        slot.results[checker.index] = CANCELLED
                        slot.missing -= 1
            for checker in self.checkers:
                self._advance(checker)  # checks of chunks before the ending one go on
            self.finishing = False
            self.emit_ready()
        except Exception as exc:
            self.terminate(exc)
        finally:
            self.finishing = False

    def emit_ready(self) -> None:
        """Emit every chunk that has all its answers, in order; then the end, if it is due."""
        pending = self.pending
        observer = self.observer
        while pending and not self.stopped:
            slot = pending[0]
            k = slot.chunk.chunk_index
            if k == self.end_at:
                if not self.finish_done or any(kk >= k for w in self.checkers for kk in w.busy.values()):
                    return  # cancelled checks finish cancelling first: nothing outlives the run
                if self.end_error is not None:
                    self.terminate(self.end_error)
                    return
                if slot.missing:
                    return
                del pending[0]
                verdict = self._verdict(slot, failing=True)
                try:
                    observer.on_next(verdict)
                except Exception as exc:
                    self.terminate(exc)
                    return
                self.terminate(None)
                return
            if slot.missing:
                own = self.own
                if (
                    own is not None
                    and self.finish_done
                    and not self.finishing  # the ending chunk's answers are settled
                    and self.end_at is not None
                    and own.stuck(slot)
                ):
                    own.merge_into_end()
                    continue
                return
            del pending[0]
            if self.own is not None and self.snapshots and not slot.flush:
                self.own.advance_anchor(slot.chunk.end)
            verdict = self._verdict(slot, failing=False)
            try:
                observer.on_next(verdict)
            except Exception as exc:
                self.terminate(exc)
                return
        if self.stopped or pending or self.upstream_end is None or self.end_at is not None:
            return
        self.terminate(self.upstream_end[0])

    def _verdict(self, slot: PendingChunk, *, failing: bool) -> ChunkVerdict:
        k = slot.chunk.chunk_index
        answers, last = slot.results, self.last_results
        results: tuple[PartialValidationResult, ...]
        if slot.missing:
            results = tuple(r if r is not None else CANCELLED for r in answers)
        elif len(answers) == len(last) and all(map(operator.is_, answers, last)):
            # The same result objects as the previous verdict (checks that return shared
            # constants): its tuple again, so the event log keeps one tuple, not one a chunk.
            results = last
        else:
            results = self.last_results = tuple(answers)  # type: ignore[arg-type]  # no None
        restore = carry = None
        if self.snapshots:
            if failing:
                restore = tuple(self._state_at_delivered_end(w, k) for w in self.checkers)
                if self.own is not None:
                    carry = tuple(w.own.carried() if w.own is not None else None for w in self.checkers)
            for w in self.checkers:
                w.snaps.pop(k, None)
        return ChunkVerdict(
            slot.chunk,
            results,
            self.reqs,
            flush=slot.flush,
            restore=restore,
            carry=carry,
            on_delivered=slot.on_delivered,
        )

    @staticmethod
    def _state_at_delivered_end(checker: Checker, k: int) -> Requirement:
        own = checker.own
        if own is None:
            return checker.snaps.get(k, checker.req)
        # Before the first piece after the delivered text (if it was judged at all).
        return own.snaps.get(own.log[0].start, checker.req) if own.log else checker.req

    def terminate(self, error: BaseException | None) -> None:
        """End the verdict stream: dispose, then complete (*error* ``None``) or raise *error*."""
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

    def dispose(self) -> None:  # the run is its own subscription (validate returns it)
        """Stop: close every lane (cancelling the checks in flight) and dispose the upstream."""
        if self.stopped:
            return
        self.stopped = True
        self.pending.clear()
        for lane in self.idle:
            lane.close()
        self.idle.clear()
        for checker in self.checkers:
            for lane in checker.busy:
                lane.close()
            checker.busy.clear()
            checker.snaps.clear()
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.dispose()
        own, self.own = self.own, None  # it refers back to the run: no cycle outlives the run
        if own is not None:
            own.dispose()
