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
  has judged all of it and every earlier chunk has left.
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

Requirements with their own ``chunking`` (a word check on a sentence stream) cut the
output themselves and judge their own pieces, in order, one at a time, as soon as each
piece is complete (fed from the raw deltas when ``text=`` is given, so they may judge
ahead of the stream's chunks; otherwise from the chunks). The rule that delivery obeys:

    **a chunk leaves only when every requirement has judged every character of it.**
    For a requirement with its own chunking, that means every one of its pieces that
    overlaps the chunk has been judged ("pass" or "unknown").

The trade-off: delivery waits for the coarsest own chunking. A word at the end of a
sentence completes with the whitespace after it, which is the same delta that completes
the sentence, so a word check costs a sentence stream no delay; but a paragraph check on
a sentence stream holds every sentence of a paragraph until the paragraph is complete
(its blank line, or the end of the stream) and judged. A failing piece fails the first
undelivered chunk it overlaps; a piece beyond the last chunk (text the stream has not
cut yet, or never cuts) fails a ``flush`` verdict carrying that text, which is never
delivered. With ``snapshots`` (a run with retries), the failing verdict also carries
each own chunker's state at the end of the delivered text (``carry``), which the next
attempt continues from (pass it as ``carry=``): a fragment withheld there is judged
with the text that follows it. A failing piece that overlaps text delivered before this
attempt (``on_delivered``) cannot be retried: that text cannot be retracted.
"""

from __future__ import annotations

import asyncio
import copy
from collections import deque
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
    text: Observable[str] | None = None,
    carry: Sequence[tuple[int, str] | None] | None = None,
) -> Callable[[Observable[Chunk]], Observable[ChunkVerdict]]:
    """Check every chunk against *requirements* (``stream_validate``); emit verdicts in order.

    *stop* is called first thing, synchronously, when a chunk fails or a check
    raises: pass the producer's stop (``thunk.cancel``) so the generation ends before
    anything else is done. *timeout* is the deadline (seconds) of every check whose
    requirement sets none. With *snapshots*, a failing verdict carries ``restore`` and
    ``carry``: each requirement, and each own chunker, as it was at the end of the
    delivered text.

    *text* is the raw deltas of the stream the chunks were cut from (offsets counting
    from 0, or from where *carry* ends): requirements with their own chunking are fed
    from it, so their pieces complete with the delta that completes them. Without it
    they are fed the chunks, and a piece at a chunk's end waits for the next chunk.
    *carry* is a failing verdict's ``carry``: the own chunkers continue from it.

    After the failing verdict (always the last one) the operator completes and
    disposes its upstream. Disposal cancels the checks in flight. With no
    requirements every chunk passes with no results.

    Raises:
        ValueError: a requirement's ``chunking`` is an unknown alias.
    """
    arguments.positive_seconds("timeout", timeout)  # before anything starts: a deadline always computes
    reqs = tuple(requirements)
    strategies = tuple(_own_chunking(req) for req in reqs)
    carried = tuple(carry) if carry is not None else (None,) * len(reqs)

    def operator(source: Observable[Chunk]) -> Observable[ChunkVerdict]:
        if not reqs:
            return _unchecked(source)

        def subscribe_fn(observer: Any) -> abc.DisposableBase:
            scheduler = _Scheduler(
                reqs, strategies, backend, ctx, stop, timeout, snapshots, observer, carried
            )
            scheduler.connect(source, text)
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

    __slots__ = ("chunk", "flush", "missing", "on_delivered", "results")

    def __init__(self, chunk: Chunk, n: int, flush: bool = False) -> None:
        self.chunk = chunk
        self.results: list[PartialValidationResult | None] = [None] * n
        self.missing = n
        self.flush = flush
        self.on_delivered = False


_END = float("inf")


class _Own:
    """A requirement's own chunking: its chunker, its pieces, and how far it has judged.

    Pieces are judged in order, one at a time. ``judged`` keeps the answers of pieces
    that still overlap a chunk waiting to leave. With snapshots, ``anchor`` is the
    chunker's state ``(offset, pending)`` at the end of the delivered text, ``log`` the
    pieces released after it and ``snaps`` the requirement before each was judged.
    """

    __slots__ = (
        "anchor",
        "base",
        "chunker",
        "fed",
        "flushed",
        "judged",
        "judging",
        "log",
        "queue",
        "snaps",
        "strategy",
    )

    def __init__(self, strategy: ChunkingStrategy, carry: tuple[int, str] | None) -> None:
        self.strategy = strategy
        self.chunker: Chunker | None = None
        self.queue: deque[Chunk] = deque()  # released, not started
        self.judging: Chunk | None = None
        self.judged: list[tuple[Chunk, PartialValidationResult]] = []
        self.flushed = False
        self.anchor: tuple[int, str] = (0, "")
        self.base = 0  # where this stream's text starts: text before it was delivered earlier
        self.fed = 0  # the offset after the text fed so far
        self.log: list[Chunk] = []
        self.snaps: dict[int, Requirement] = {}
        if carry is not None:
            self.begin(*carry)

    def begin(self, offset: int, pending: str) -> None:
        """Start the chunker in state *(offset, pending)* (withheld, nothing to release)."""
        self.chunker = Chunker(self.strategy, start_offset=offset)
        self.chunker.feed(pending)  # nothing complete in a withheld fragment: releases nothing
        self.anchor = (offset, pending)
        self.base = self.fed = offset + len(pending)

    def feed(self, text: str, at: int) -> list[Chunk]:
        """Feed *text*, which starts at offset *at*; return the pieces it completed."""
        if self.chunker is None:
            self.begin(at, "")
        assert self.chunker is not None
        self.fed += len(text)
        return self.chunker.feed(text)

    def frontier(self) -> float:
        """Every piece that starts before this offset has been judged."""
        if self.judging is not None:
            return self.judging.start
        if self.queue:
            return self.queue[0].start
        if self.flushed:
            return _END
        chunker = self.chunker
        # Text the chunker has read past without starting a piece is in none: judged "unknown".
        return -1 if chunker is None else chunker.settled

    def result_for(self, chunk: Chunk) -> PartialValidationResult:
        """This requirement's answer on *chunk*: "pass" if every piece overlapping it passed
        (the last one's), else "unknown" (the last doubtful piece's, or no piece overlaps it);
        and forget the pieces that end inside it (no later chunk overlaps them)."""
        overlapping = [r for p, r in self.judged if p.start < chunk.end and p.end > chunk.start]
        self.judged = [(p, r) for p, r in self.judged if p.end > chunk.end]
        if not overlapping:
            return _UNKNOWN
        # The last piece's own answer (its reason says most): the last "unknown" if any.
        doubtful = [r for r in overlapping if r.success != "pass"]
        return doubtful[-1] if doubtful else overlapping[-1]


class _Worker:
    """One requirement's schedule: the next chunk it checks, and the lanes continuing its checks."""

    __slots__ = (
        "busy",
        "concurrency",
        "index",
        "next",
        "on_error",
        "on_timeout",
        "own",
        "req",
        "snaps",
        "timeout",
    )

    def __init__(
        self,
        index: int,
        req: Requirement,
        strategy: ChunkingStrategy | None,
        timeout: float | None,
        carry: tuple[int, str] | None,
    ):
        self.index = index
        self.req = req
        self.own = _Own(strategy, carry) if strategy is not None else None
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
        "anchor_at",
        "anchor_text",
        "backend",
        "ctx",
        "end_at",
        "end_error",
        "finish_done",
        "finishing",
        "idle",
        "loop",
        "next_index",
        "next_start",
        "observer",
        "own",
        "pending",
        "raw",
        "received_end",
        "reqs",
        "snapshots",
        "stop",
        "stopped",
        "tail",
        "text_end",
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
        carry: tuple[tuple[int, str] | None, ...],
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.reqs = reqs
        self.backend = backend
        self.ctx = ctx
        self.stop = stop
        self.snapshots = snapshots
        self.observer = observer
        self.workers = [
            _Worker(i, r, s, timeout, c)
            for i, (r, s, c) in enumerate(zip(reqs, strategies, carry, strict=False))
        ]
        # The workers with their own chunking (empty in the common case: nothing of theirs runs).
        self.own = [w for w in self.workers if w.own is not None]
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
        self.next_index = 0  # the index after the last chunk received
        self.next_start = 0  # the offset after the last chunk received
        self.stopped = False  # terminated or disposed
        self.upstream: abc.DisposableBase | None = None
        self.raw: abc.DisposableBase | None = None  # the raw text's subscription (own chunkings only)
        # Own chunkings only: the offset after the text fed to them, the end of the last chunk
        # received, the text fed after it, and (with snapshots) the text since the delivered end.
        start = next((c[0] + len(c[1]) for c in carry if c is not None), 0)
        self.text_end = start
        self.received_end = start
        self.tail = ""
        self.anchor_at = start
        self.anchor_text: list[str] = []

    # -- upstream --------------------------------------------------------------

    def connect(self, source: Observable[Chunk], text: Observable[str] | None) -> None:
        self.upstream = observe(source, self)
        if self.stopped:  # it ended while subscribing
            self.upstream.dispose()
            return
        if self.own and text is not None:
            # After the chunks: a delta reaches the chunker first, so the chunk it completes
            # is waiting here when the own chunkers see the delta (a failing piece fails it).
            raw = subscribe(text, self._on_text, _ignore_error, _nothing)
            if self.stopped:
                raw.dispose()
            else:
                self.raw = raw

    def on_next(self, chunk: Chunk) -> None:
        if self.stopped or (self.end_at is not None and chunk.chunk_index >= self.end_at):
            return
        try:
            self.pending.append(_Slot(chunk, len(self.reqs)))
            self.next_index, self.next_start = chunk.chunk_index + 1, chunk.end
            if self.own:
                self._own_chunk(chunk)
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
            if self.own:  # the text received is all there is: judge the chunks' last pieces
                self._flush_own(tail_slot=False)
            self._emit_ready()
        except Exception as exc:
            self._terminate(exc)

    def on_completed(self) -> None:
        if self.stopped or self.end_at is not None or self.upstream_end is not None:
            return
        self.upstream_end = (None,)
        try:
            if self.own:
                self._flush_own(tail_slot=True)
            self._emit_ready()
        except Exception as exc:
            self._terminate(exc)

    # -- own chunkings ---------------------------------------------------------

    def _on_text(self, delta: str) -> None:
        if self.stopped or self.upstream_end is not None:
            return
        try:
            self._feed(delta)
            self._pump_own()
            self._emit_ready()
        except Exception as exc:
            self._terminate(exc)

    def _own_chunk(self, chunk: Chunk) -> None:
        if self.raw is None:  # no raw text: the chunks are the text
            first = self.own[0].own
            if first is not None and first.chunker is None:  # the text starts with this chunk's gap
                self.text_end = self.received_end = self.anchor_at = chunk.start - len(chunk.gap)
            self._feed(chunk.gap + chunk.text)
        self.received_end = chunk.end
        cut = len(self.tail) - (self.text_end - chunk.end)
        self.tail = self.tail[cut:] if cut < len(self.tail) else ""
        self._pump_own()

    def _feed(self, text: str) -> None:
        at = self.text_end
        self.text_end += len(text)
        if self.text_end > self.received_end:
            self.tail = (self.tail + text)[-(self.text_end - self.received_end) :]
        if self.snapshots:
            self.anchor_text.append(text)
        for worker in self.own:
            own = worker.own
            assert own is not None
            pieces = own.feed(text, at)
            own.queue.extend(pieces)
            if self.snapshots:
                own.log.extend(pieces)

    def _flush_own(self, *, tail_slot: bool) -> None:
        """The text has ended: release the own chunkers' withheld fragments, and (*tail_slot*)
        give pieces after the last chunk a verdict of their own."""
        for worker in self.own:
            own = worker.own
            assert own is not None
            if own.chunker is not None:
                try:
                    pieces = own.chunker.flush()
                except ValueError:
                    if tail_slot:
                        raise
                    # The upstream's error ends the run: an own chunker's complaint about the
                    # text it cut short (an unfinished JSON document) must not replace it.
                    pieces = []
                own.queue.extend(pieces)
                if self.snapshots:
                    own.log.extend(pieces)
            own.flushed = True
        last = self._last_piece_start()
        if tail_slot and last >= 0 and self._attribute(last) is None:
            self._add_tail_slot()
        self._pump_own()

    def _last_piece_start(self) -> int:
        """The start of the last piece an own chunking has still to judge (-1: none)."""
        last = -1
        for worker in self.own:
            own = worker.own
            assert own is not None
            piece = own.queue[-1] if own.queue else own.judging
            if piece is not None:
                last = max(last, piece.start)
        return last

    def _add_tail_slot(self) -> _Slot:
        """A verdict for text after the last chunk, which own chunkings judged (never delivered)."""
        start = self.text_end - len(self.tail)
        slot = _Slot(Chunk(self.tail, self.next_index, start, self.text_end), len(self.reqs), flush=True)
        self.next_index += 1
        for worker in self.workers:
            if worker.own is None:  # nothing of the stream's own to judge there
                slot.results[worker.index] = _UNKNOWN
                slot.missing -= 1
        self.pending.append(slot)
        return slot

    def _attribute(self, position: float) -> int | None:
        """The chunk a piece starting at *position* fails: the first waiting one it reaches."""
        if position < 0:
            return None
        for slot in self.pending:
            if slot.chunk.end > position:
                return slot.chunk.chunk_index
        return None

    def _pump_own(self) -> None:
        for worker in self.own:
            self._pump(worker)

    def _pump(self, worker: _Worker, *, ending: bool = False) -> None:
        """Judge the worker's next pieces, in order, while they answer at once; then give
        every chunk it has now judged all of its answer. Once the run ends at a chunk, only
        the chunks before it still need judging (*ending*: the finish turn, where the
        ending chunk's pieces are judged too, for a real answer beside the failure)."""
        own = worker.own
        assert own is not None
        while own.judging is None and own.queue and not self.stopped:
            piece = own.queue[0]
            k = self._attribute(piece.start)
            end_at = self.end_at
            if end_at is not None and (k is None or k > end_at or (k == end_at and not ending)):
                break
            own.queue.popleft()
            own.judging = piece
            if self.snapshots:
                own.snaps[piece.start] = copy.copy(worker.req)
            lane = self._take_lane()
            try:
                coro = worker.req.stream_validate(piece.text, backend=self.backend, ctx=self.ctx)
                if not hasattr(coro, "send"):
                    raise _not_async(worker.req, coro)
                deadline = None if worker.timeout is None else self.loop.time() + worker.timeout
                result = lane.start(coro, deadline=deadline)
            except Exception as exc:
                self._give_back(lane)
                self._own_answer(worker, None, exc)
                continue
            if result is PENDING:
                if self.stopped:
                    lane.close()
                    return
                worker.busy[lane] = self.next_index if k is None else k
                return
            self._give_back(lane)
            self._own_answer(worker, result, None)
        self._fill(worker)

    def _own_answer(self, worker: _Worker, result: Any, error: BaseException | None) -> None:
        own = worker.own
        assert own is not None
        piece, own.judging = own.judging, None
        if self.stopped or piece is None:
            return
        k = self._attribute(piece.start)
        result = self._settle(worker, k, result, error)
        if result is None:
            return
        if result.success != "fail":
            own.judged.append((piece, result))
            return
        if k is None:  # a piece after the last chunk: it fails the text after it
            k = self._add_tail_slot().chunk.chunk_index
        slot = self._slot(k)
        if slot is not None and piece.start < own.base:
            slot.on_delivered = True  # it reaches text delivered before: no retry can take it back
        self._end(k, None)
        if slot is not None and slot.results[worker.index] is None:
            slot.results[worker.index] = result
            slot.missing -= 1

    def _fill(self, worker: _Worker) -> None:
        """Answer, for this requirement, every waiting chunk that its judged pieces now cover."""
        own = worker.own
        assert own is not None
        frontier = own.frontier()
        i = worker.index
        for slot in self.pending:
            if slot.results[i] is not None:
                continue
            if slot.chunk.end > frontier:
                return
            slot.results[i] = own.result_for(slot.chunk)
            slot.missing -= 1

    # -- checks ----------------------------------------------------------------

    def _advance(self, worker: _Worker) -> None:
        """Start the worker's next chunks while it has free lanes and chunks to check."""
        if worker.own is not None:
            self._pump(worker)
            return
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
            if slot.results[worker.index] is None:
                self._start(worker, slot)

    def _take_lane(self) -> Lane:
        idle = self.idle
        while idle and idle[-1].closed:  # its task was cancelled from outside (asyncio.run shutting down)
            idle.pop()
        return idle.pop() if idle else Lane(self.loop, self._lane_done)

    def _give_back(self, lane: Lane) -> None:
        """A lane that finished a check: idle again, unless the run has stopped (nothing may
        return to a stopped scheduler: its idle lanes were already closed)."""
        if self.stopped or lane.closed:
            lane.close()
        else:
            self.idle.append(lane)

    def _start(self, worker: _Worker, slot: _Slot) -> None:
        k = slot.chunk.chunk_index
        req = worker.req
        if self.snapshots:
            worker.snaps[k] = copy.copy(req)
        idle = self.idle  # the hot path: _take_lane and _give_back inlined
        while idle and idle[-1].closed:  # its task was cancelled from outside (asyncio.run shutting down)
            idle.pop()
        lane = idle.pop() if idle else Lane(self.loop, self._lane_done)
        try:
            coro = req.stream_validate(slot.chunk.text, backend=self.backend, ctx=self.ctx)
            if not hasattr(coro, "send"):
                raise _not_async(req, coro)
            deadline = None if worker.timeout is None else self.loop.time() + worker.timeout
            result = lane.start(coro, deadline=deadline)
        except Exception as exc:
            self._give_back(lane)
            self._answer(worker, k, None, exc)
            return
        if self.stopped:  # the check stopped the run in its first step: nothing may return to it
            lane.close()
            return
        if result is PENDING:
            worker.busy[lane] = k
            return
        idle.append(lane)
        self._answer(worker, k, result, None)

    def _lane_done(self, lane: Lane, result: Any, error: BaseException | None) -> None:
        # Runs in the lane's task (or inside a cancel): nothing may escape from here.
        for worker in self.workers:
            k = worker.busy.pop(lane, None)
            if k is not None:
                self._give_back(lane)
                try:
                    if worker.own is not None:
                        self._own_answer(worker, result, error)
                        if not self.stopped:
                            self._pump(worker)
                            if not self.finishing:
                                self._emit_ready()
                    else:
                        self._answer(worker, k, result, error)
                except Exception as exc:
                    self._terminate(exc)
                return

    def _settle(
        self, worker: _Worker, k: int | None, result: Any, error: BaseException | None
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
                    worker.on_timeout, reason=f"timed out after {worker.timeout:g} s"
                )
            if worker.on_error == "unknown" and isinstance(error, Exception):
                reason = f"check raised {type(error).__name__}: {error}"
                return PartialValidationResult("unknown", reason=reason)
            self._end(self._add_tail_slot().chunk.chunk_index if k is None else k, error)
            # An error after the finish turn (a cancelled check raising on its way out)
            # may be the last answer the ending verdict waits for.
            if self.finish_done and not self.finishing:
                self._emit_ready()
            return None
        if not isinstance(result, PartialValidationResult):
            at = self._add_tail_slot().chunk.chunk_index if k is None else k
            self._end(at, _bad_result(worker.req, result))
            return None
        return result

    def _answer(self, worker: _Worker, k: int, result: Any, error: BaseException | None) -> None:
        if self.stopped:
            return
        if error is not None or not isinstance(result, PartialValidationResult):
            result = self._settle(worker, k, result, error)
            if result is None:
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
                # I/O is cancelled and reported "cancelled". (An own chunking judges only
                # the pieces the chunks before it need.)
                for worker in self.workers:
                    if (
                        worker.own is None
                        and slot.results[worker.index] is None
                        and worker.next == k
                        and not self.stopped
                    ):
                        worker.next = k + 1
                        self._start(worker, slot)
                for worker in self.own:
                    if slot.results[worker.index] is None and not self.stopped:
                        self._pump(worker, ending=True)
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
                if (
                    self.own
                    and self.finish_done
                    and not self.finishing  # the ending chunk's answers are settled
                    and self.end_at is not None
                    and self._stuck(slot)
                ):
                    self._merge_into_end()
                    continue
                return
            del pending[0]
            if self.own and self.snapshots and not slot.flush:
                self._advance_anchor(slot.chunk.end)
            verdict = self._verdict(slot, failing=False)
            try:
                observer.on_next(verdict)
            except Exception as exc:
                self._terminate(exc)
                return
        if self.stopped or pending or self.upstream_end is None or self.end_at is not None:
            return
        self._terminate(self.upstream_end[0])

    def _stuck(self, slot: _Slot) -> bool:
        """True when *slot* waits only on own chunkings whose next piece reaches the chunk the
        run ends at (or beyond): with the generation stopped, that piece will never complete."""
        end_at = self.end_at
        assert end_at is not None
        for worker in self.workers:
            if slot.results[worker.index] is not None:
                continue
            own = worker.own
            if own is None or own.judging is not None or own.flushed:
                return False
            if own.queue:
                k = self._attribute(own.queue[0].start)
                if k is not None and k < end_at:
                    return False
        return True

    def _merge_into_end(self) -> None:
        """The chunks from the first waiting one up to the ending one cannot all be judged
        (an own piece covering them runs into the text where the run ends): they are withheld
        together, as the ending verdict's chunk, so nothing unjudged is delivered."""
        end_at = self.end_at
        assert end_at is not None
        pending = self.pending
        merged = pending[: end_at - pending[0].chunk.chunk_index + 1]
        head, last = merged[0].chunk, merged[-1]
        text = head.text + "".join(s.chunk.gap + s.chunk.text for s in merged[1:])
        slot = _Slot(Chunk(text, head.chunk_index, head.start, last.chunk.end, head.gap), len(self.reqs))
        slot.results, slot.missing = list(last.results), last.missing
        slot.on_delivered = any(s.on_delivered for s in merged)
        del pending[: len(merged)]
        pending.insert(0, slot)
        self.end_at = head.chunk_index
        for worker in self.workers:  # their answers on the merged chunks are moot
            for lane, kk in list(worker.busy.items()):
                if kk >= head.chunk_index:
                    lane.cancel()

    def _advance_anchor(self, end: int) -> None:
        """The delivered text now ends at *end*: move each own chunker's restore point there
        (its state had it been fed exactly the delivered text), and forget what lies before."""
        text = "".join(self.anchor_text)
        cut = end - self.anchor_at
        for worker in self.own:
            own = worker.own
            assert own is not None
            offset, fragment = own.anchor
            chunker = Chunker(own.strategy, start_offset=offset)
            released = len(chunker.feed(fragment)) + len(chunker.feed(text[:cut]))
            for piece in own.log[:released]:
                own.snaps.pop(piece.start, None)
            del own.log[:released]
            own.anchor = (end - len(chunker.pending), chunker.pending)
        self.anchor_text = [text[cut:]] if cut < len(text) else []
        self.anchor_at = end

    def _verdict(self, slot: _Slot, *, failing: bool) -> ChunkVerdict:
        k = slot.chunk.chunk_index
        results = tuple(r if r is not None else CANCELLED for r in slot.results)
        restore = carry = None
        if self.snapshots:
            if failing:
                restore = tuple(self._state_at_delivered_end(w, k) for w in self.workers)
                if self.own:
                    carry = tuple(w.own.anchor if w.own is not None else None for w in self.workers)
            for w in self.workers:
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
    def _state_at_delivered_end(worker: _Worker, k: int) -> Requirement:
        own = worker.own
        if own is None:
            return worker.snaps.get(k, worker.req)
        # Before the first piece after the delivered text (if it was judged at all).
        return own.snaps.get(own.log[0].start, worker.req) if own.log else worker.req

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
        raw, self.raw = self.raw, None
        if raw is not None:
            raw.dispose()


def _ignore_error(error: Exception) -> None:
    """The raw text's end: the chunks' stream, from the same source, carries it."""


def _nothing() -> None:
    pass


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
