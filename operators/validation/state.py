"""What a validation run keeps per chunk and per requirement: mutable holders; the run acts on them.

* :class:`PendingChunk`: a chunk waiting to leave, and the answers it has so far;
* :class:`Checker`: one requirement in a run (its settings, the next chunk it checks,
  the lanes continuing its checks);
* :class:`OwnChunking`: a requirement's own chunking (its chunker, its pieces, how far it
  has judged, and with snapshots its state at the end of the delivered text).

They use ``__slots__`` rather than attrs: they change on every chunk, and a run makes
one :class:`PendingChunk` per chunk.
"""

from __future__ import annotations

from collections import deque

from engine.core.eager import Lane
from engine.core.requirements import PartialValidationResult, Policy, Requirement
from operators.chunking import Chunk, Chunker, ChunkingStrategy, ScanningStrategy

UNKNOWN = PartialValidationResult("unknown")

_END = float("inf")


class PendingChunk:
    """A chunk waiting to leave, and the answers it has so far."""

    __slots__ = ("chunk", "flush", "missing", "on_delivered", "results")

    def __init__(self, chunk: Chunk, n: int, flush: bool = False) -> None:
        self.chunk = chunk
        self.results: list[PartialValidationResult | None] = [None] * n
        self.missing = n
        self.flush = flush
        self.on_delivered = False


class OwnChunking:
    """A requirement's own chunking: its chunker, its pieces, and how far it has judged.

    Pieces are judged in order, one at a time. ``judged`` keeps the answers of pieces
    that still overlap a chunk waiting to leave. With snapshots, ``anchor`` is the
    chunker's state ``(offset, pending)`` at the end of the delivered text, ``log`` the
    pieces released after it and ``snaps`` the requirement before each was judged. A
    scanning chunker's state is not a fragment but what it read from its stream's start
    (a JSON document's nesting): its anchor is ``(start, the delivered text since start)``,
    whose parts ``delivered`` keeps until :meth:`carried` joins them.
    """

    __slots__ = (
        "anchor",
        "base",
        "chunker",
        "delivered",
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
        self.delivered: list[str] | None = [] if isinstance(strategy, ScanningStrategy) else None
        if carry is not None:
            self.begin(*carry)

    def begin(self, offset: int, pending: str) -> None:
        """Start the chunker in state *(offset, pending)*: *pending* is text judged before (a
        restartable chunker's withheld fragment, or for a scanning one the delivered text from
        the start of the output, which rebuilds its state); nothing of it is released again."""
        self.chunker = Chunker(self.strategy, start_offset=offset)
        self.chunker.resume(pending)
        self.anchor = (offset, pending)
        if self.delivered is not None:
            self.delivered = [pending]
        self.base = self.fed = offset + len(pending)

    def carried(self) -> tuple[int, str]:
        """The chunker's state at the end of the delivered text, for the next attempt to begin in."""
        if self.delivered is None:
            return self.anchor
        text = "".join(self.delivered)
        self.delivered = [text]
        return self.anchor[0], text

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
            return UNKNOWN
        # The last piece's own answer (its reason says most): the last "unknown" if any.
        doubtful = [r for r in overlapping if r.success != "pass"]
        return doubtful[-1] if doubtful else overlapping[-1]


class Checker:
    """One requirement in a run: its settings, the next chunk it checks, and the lanes
    continuing its checks (each requirement checks its chunks on a schedule of its own)."""

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
        self.own = OwnChunking(strategy, carry) if strategy is not None else None
        self.concurrency = max(1, int(getattr(req, "concurrency", 1) or 1))
        own = getattr(req, "timeout", None)
        self.timeout: float | None = own if own is not None else timeout
        self.on_timeout: Policy = getattr(req, "on_timeout", "fail")
        self.on_error = getattr(req, "on_error", "raise")
        self.next = -1  # the chunk index it checks next (set at the first chunk)
        self.busy: dict[Lane, int] = {}  # lanes continuing a suspended check -> chunk index
        self.snaps: dict[int, Requirement] = {}
