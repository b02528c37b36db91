"""Requirements that cut the output themselves (``Requirement.chunking``), within one run.

A :class:`~operators.validation.run.ValidationRun` makes an :class:`OwnChunkingRun` only
when a requirement has its own chunking; a run without one never reaches this module.
It feeds every own chunker the text (the raw deltas when ``text=`` is given, else the
chunks), judges each chunker's pieces in order as they complete, answers each waiting
chunk once the pieces overlapping it are judged, gives text past the last chunk a
``flush`` verdict of its own, and (with snapshots) keeps each chunker's state at the end
of the delivered text, which a failing verdict carries to the next attempt.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any, Protocol

from reactivex import Observable, abc

from engine.core.asyncrx import subscribe
from engine.core.context import Context
from engine.core.eager import PENDING, Lane
from engine.core.requirements import PartialValidationResult, Requirement
from operators.chunking import Chunk, Chunker
from operators.validation.errors import not_async
from operators.validation.state import UNKNOWN, Checker, PendingChunk


class Run(Protocol):
    """The run an :class:`OwnChunkingRun` belongs to: what it reads, sets and calls there."""

    loop: asyncio.AbstractEventLoop
    reqs: tuple[Requirement, ...]
    backend: Any
    ctx: Context
    snapshots: bool
    checkers: list[Checker]
    pending: list[PendingChunk]
    end_at: int | None
    next_index: int
    stopped: bool
    upstream_end: tuple[Exception | None] | None

    def end(self, k: int, error: BaseException | None) -> None: ...

    def settle(
        self, checker: Checker, k: int | None, result: Any, error: BaseException | None
    ) -> PartialValidationResult | None: ...

    def pending_at(self, k: int) -> PendingChunk | None: ...

    def emit_ready(self) -> None: ...

    def terminate(self, error: BaseException | None) -> None: ...

    def take_lane(self) -> Lane: ...

    def give_back(self, lane: Lane) -> None: ...


class OwnChunkingRun:
    """The checkers with their own chunking in one run, and the text they are fed."""

    __slots__ = (
        "anchor_at",
        "anchor_text",
        "checkers",
        "raw",
        "received_end",
        "run",
        "tail",
        "text_end",
    )

    def __init__(self, run: Run, checkers: list[Checker], carry: tuple[tuple[int, str] | None, ...]) -> None:
        self.run = run
        self.checkers = checkers
        self.raw: abc.DisposableBase | None = None  # the raw text's subscription
        # The offset after the text fed to the chunkers, the end of the last chunk received,
        # the text fed after it, and (with snapshots) the text since the delivered end.
        start = next((c[0] + len(c[1]) for c in carry if c is not None), 0)
        self.text_end = start
        self.received_end = start
        self.tail = ""
        self.anchor_at = start
        self.anchor_text: list[str] = []

    def connect(self, text: Observable[str]) -> None:
        """Feed the chunkers the raw deltas of *text* (subscribed after the chunks)."""
        # After the chunks: a delta reaches the chunker first, so the chunk it completes
        # is waiting here when the own chunkers see the delta (a failing piece fails it).
        raw = subscribe(text, self.on_text, _ignore_error, _nothing)
        if self.run.stopped:
            raw.dispose()
        else:
            self.raw = raw

    def dispose(self) -> None:
        """Stop reading the raw text."""
        raw, self.raw = self.raw, None
        if raw is not None:
            raw.dispose()

    # -- the text --------------------------------------------------------------

    def on_text(self, delta: str) -> None:
        """A raw delta: feed it to the chunkers, judge the pieces it completed, emit what is due."""
        run = self.run
        if run.stopped or run.upstream_end is not None:
            return
        try:
            self._feed(delta)
            self._pump_all()
            run.emit_ready()
        except Exception as exc:
            run.terminate(exc)

    def on_chunk(self, chunk: Chunk) -> None:
        """A chunk was received (it is waiting in the run's ``pending``)."""
        if self.raw is None:  # no raw text: the chunks are the text
            first = self.checkers[0].own
            if first is not None and first.chunker is None:  # the text starts with this chunk's gap
                self.text_end = self.received_end = self.anchor_at = chunk.start - len(chunk.gap)
            self._feed(chunk.gap + chunk.text)
        self.received_end = chunk.end
        cut = len(self.tail) - (self.text_end - chunk.end)
        self.tail = self.tail[cut:] if cut < len(self.tail) else ""
        self._pump_all()

    def _feed(self, text: str) -> None:
        at = self.text_end
        self.text_end += len(text)
        if self.text_end > self.received_end:
            self.tail = (self.tail + text)[-(self.text_end - self.received_end) :]
        snapshots = self.run.snapshots
        if snapshots:
            self.anchor_text.append(text)
        for checker in self.checkers:
            own = checker.own
            assert own is not None
            pieces = own.feed(text, at)
            own.queue.extend(pieces)
            if snapshots:
                own.log.extend(pieces)

    def flush(self, *, tail_slot: bool) -> None:
        """The text has ended: release the own chunkers' withheld fragments, and (*tail_slot*)
        give pieces after the last chunk a verdict of their own."""
        for checker in self.checkers:
            own = checker.own
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
                if self.run.snapshots:
                    own.log.extend(pieces)
            own.flushed = True
        last = self._last_piece_start()
        if tail_slot and last >= 0 and self._attribute(last) is None:
            self.add_tail_slot()
        self._pump_all()

    def _last_piece_start(self) -> int:
        """The start of the last piece an own chunking has still to judge (-1: none)."""
        last = -1
        for checker in self.checkers:
            own = checker.own
            assert own is not None
            piece = own.queue[-1] if own.queue else own.judging
            if piece is not None:
                last = max(last, piece.start)
        return last

    def add_tail_slot(self) -> PendingChunk:
        """A verdict for text after the last chunk, which own chunkings judged (never delivered)."""
        run = self.run
        start = self.text_end - len(self.tail)
        slot = PendingChunk(Chunk(self.tail, run.next_index, start, self.text_end), len(run.reqs), flush=True)
        run.next_index += 1
        for checker in run.checkers:
            if checker.own is None:  # nothing of the stream's own to judge there
                slot.results[checker.index] = UNKNOWN
                slot.missing -= 1
        run.pending.append(slot)
        return slot

    def _attribute(self, position: float) -> int | None:
        """The chunk a piece starting at *position* fails: the first waiting one it reaches."""
        if position < 0:
            return None
        for slot in self.run.pending:
            if slot.chunk.end > position:
                return slot.chunk.chunk_index
        return None

    # -- the pieces ------------------------------------------------------------

    def _pump_all(self) -> None:
        for checker in self.checkers:
            self.pump(checker)

    def pump(self, checker: Checker, *, ending: bool = False) -> None:
        """Judge the checker's next pieces, in order, while they answer at once; then give
        every chunk it has now judged all of its answer. Once the run ends at a chunk, only
        the chunks before it still need judging (*ending*: the finish turn, where the
        ending chunk's pieces are judged too, for a real answer beside the failure)."""
        run = self.run
        own = checker.own
        assert own is not None
        while own.judging is None and own.queue and not run.stopped:
            piece = own.queue[0]
            k = self._attribute(piece.start)
            end_at = run.end_at
            if end_at is not None and (k is None or k > end_at or (k == end_at and not ending)):
                break
            own.queue.popleft()
            own.judging = piece
            if run.snapshots:
                own.snaps[piece.start] = copy.copy(checker.req)
            lane = run.take_lane()
            try:
                coro = checker.req.stream_validate(piece.text, backend=run.backend, ctx=run.ctx)
                if not hasattr(coro, "send"):
                    raise not_async(checker.req, coro)
                deadline = None if checker.timeout is None else run.loop.time() + checker.timeout
                result = lane.start(coro, deadline=deadline)
            except Exception as exc:
                run.give_back(lane)
                self.answer(checker, None, exc)
                continue
            if result is PENDING:
                if run.stopped:
                    lane.close()
                    return
                checker.busy[lane] = run.next_index if k is None else k
                return
            run.give_back(lane)
            self.answer(checker, result, None)
        self._fill(checker)

    def answer(self, checker: Checker, result: Any, error: BaseException | None) -> None:
        """The checker's piece in judgement got *result* (or raised *error*)."""
        run = self.run
        own = checker.own
        assert own is not None
        piece, own.judging = own.judging, None
        if run.stopped or piece is None:
            return
        k = self._attribute(piece.start)
        result = run.settle(checker, k, result, error)
        if result is None:
            return
        if result.success != "fail":
            own.judged.append((piece, result))
            return
        if k is None:  # a piece after the last chunk: it fails the text after it
            k = self.add_tail_slot().chunk.chunk_index
        slot = run.pending_at(k)
        if slot is not None and piece.start < own.base:
            slot.on_delivered = True  # it reaches text delivered before: no retry can take it back
        run.end(k, None)
        if slot is not None and slot.results[checker.index] is None:
            slot.results[checker.index] = result
            slot.missing -= 1

    def _fill(self, checker: Checker) -> None:
        """Answer, for this requirement, every waiting chunk that its judged pieces now cover."""
        own = checker.own
        assert own is not None
        frontier = own.frontier()
        i = checker.index
        for slot in self.run.pending:
            if slot.results[i] is not None:
                continue
            if slot.chunk.end > frontier:
                return
            slot.results[i] = own.result_for(slot.chunk)
            slot.missing -= 1

    # -- the end -----------------------------------------------------------------

    def stuck(self, slot: PendingChunk) -> bool:
        """True when *slot* waits only on own chunkings whose next piece reaches the chunk the
        run ends at (or beyond): with the generation stopped, that piece will never complete."""
        end_at = self.run.end_at
        assert end_at is not None
        for checker in self.run.checkers:
            if slot.results[checker.index] is not None:
                continue
            own = checker.own
            if own is None or own.judging is not None or own.flushed:
                return False
            if own.queue:
                k = self._attribute(own.queue[0].start)
                if k is not None and k < end_at:
                    return False
        return True

    def merge_into_end(self) -> None:
        """The chunks from the first waiting one up to the ending one cannot all be judged
        (an own piece covering them runs into the text where the run ends): they are withheld
        together, as the ending verdict's chunk, so nothing unjudged is delivered."""
        run = self.run
        end_at = run.end_at
        assert end_at is not None
        pending = run.pending
        merged = pending[: end_at - pending[0].chunk.chunk_index + 1]
        head, last = merged[0].chunk, merged[-1]
        text = head.text + "".join(s.chunk.gap + s.chunk.text for s in merged[1:])
        chunk = Chunk(text, head.chunk_index, head.start, last.chunk.end, head.gap)
        slot = PendingChunk(chunk, len(run.reqs))
        slot.results, slot.missing = list(last.results), last.missing
        slot.on_delivered = any(s.on_delivered for s in merged)
        del pending[: len(merged)]
        pending.insert(0, slot)
        run.end_at = head.chunk_index
        for checker in run.checkers:  # their answers on the merged chunks are moot
            for lane, kk in list(checker.busy.items()):
                if kk >= head.chunk_index:
                    lane.cancel()

    # -- carry across attempts ---------------------------------------------------

    def advance_anchor(self, end: int) -> None:
        """The delivered text now ends at *end*: move each own chunker's restore point there
        (its state had it been fed exactly the delivered text), and forget what lies before."""
        text = "".join(self.anchor_text)
        cut = end - self.anchor_at
        for checker in self.checkers:
            own = checker.own
            assert own is not None
            if own.delivered is not None:
                # A scanning chunker (see OwnChunking): its pieces never overlap, and the
                # delivered text, which ends where a delivered value ends, completes the ones
                # that end in it (Chunker.resume takes a number at its very end as complete).
                own.delivered.append(text[:cut])
                released = sum(1 for piece in own.log if piece.end <= end)
            else:
                offset, fragment = own.anchor
                chunker = Chunker(own.strategy, start_offset=offset)
                released = len(chunker.feed(fragment)) + len(chunker.feed(text[:cut]))
                own.anchor = (end - len(chunker.pending), chunker.pending)
            for piece in own.log[:released]:
                own.snaps.pop(piece.start, None)
            del own.log[:released]
        self.anchor_text = [text[cut:]] if cut < len(text) else []
        self.anchor_at = end


def _ignore_error(error: Exception) -> None:
    """The raw text's end: the chunks' stream, from the same source, carries it."""


def _nothing() -> None:
    pass
