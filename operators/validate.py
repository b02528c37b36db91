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

The machinery is in :mod:`operators.validation`: the run that coordinates one subscription
(``run.py``), the requirements with their own chunking (``own_chunking.py``), and what a run
keeps per chunk and per requirement (``state.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from reactivex import Observable, abc

from engine.core import arguments
from engine.core.asyncrx import LoopObservable, subscribe
from engine.core.context import Context
from engine.core.requirements import Requirement
from operators.chunking import Chunk, ChunkingStrategy, resolve_chunking_strategy
from operators.validation.run import ValidationRun
from operators.verdicts import ChunkVerdict

__all__ = ["validate"]


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
    start_index: int = 0,
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
    *start_index* is the index of the stream's first chunk (a retry's chunks go on from
    the delivered ones): a verdict on text before any chunk is numbered from there.

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
            run = ValidationRun(
                reqs, strategies, backend, ctx, stop, timeout, snapshots, observer, carried, start_index
            )
            run.connect(source, text)
            return run  # its own subscription: dispose() is idempotent

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
