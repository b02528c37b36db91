"""Validators that don't hold the stream back: strict order against the engine's own scheduling.

A scripted model produces one 4-character token every 20 ms (``ScriptedBackend(delay=0.02)``).
Two requirements check every sentence: a fast check (answers at once; fails a sentence
holding the planted word) and a "judge" whose ``stream_validate`` sleeps 150 ms (an LLM
judge or a remote classifier) and has no opinion. Sentence chunking, every event read.

Two texts: short sentences (2 to 5 words, so sentences arrive faster than the judge
answers and a backlog can build) and typical ones (6 to 18 words). In the failing runs
the planted word is in a late sentence; the passing runs have none.

Modes, alternated run by run in this process, on the same engine:

- ``strict order``: today's rule, emulated with the public API: each requirement is
  wrapped so that it may not start chunk n+1 until every requirement has finished chunk
  n (a shared per-chunk barrier). On an engine that already works this way the wrapper
  changes nothing.
- ``engine``: the requirements as they are, scheduled by the engine. With the new
  scheduling (each requirement sees its chunks in order, requirements do not
  wait for each other) the fast check runs ahead of the judge.
- ``engine, judge concurrency=4``: the judge declared stateless with
  ``Requirement(..., concurrency=4)``, when the engine supports it (else not measured).

Reported per mode: on the failing run, time from the request to the failure's detection
(the fast check's verdict), the detection lag (verdict minus the arrival of the token that
completed the failing sentence) and the tokens generated after the verdict; on the passing
run, time to the last chunk and how long after the last token it came.

Run: ``python benchmarks/scheduling.py [--quick] [--out PATH]``
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import inspect
import random
import time
from typing import Any

from _harness import alternate, parse_args, run_async, split_deltas, summarize, write_result

from backends import ScriptedBackend
from engine import (
    CBlock,
    ChunkEvent,
    PartialValidationResult,
    Requirement,
    SimpleContext,
    ValidationResult,
    stream_with_chunking,
)

TOKEN_S = 0.020
TOKEN_CHARS = 4
JUDGE_S = 0.150
PLANTED = "forbidden"
STRICT = "strict order"
ENGINE = "engine"
ENGINE_CONCURRENT = "engine, judge concurrency=4"
_WORDS = ("model", "stream", "token", "check", "judge", "chunk", "answer", "order", "reply", "text", "fast")

COLUMNS = [
    ("text", "text"),
    ("mode", "mode"),
    ("runs", "runs"),
    ("detect_s", "failing run: request → detection (s)"),
    ("detect_lag_ms", "detection lag after the sentence (ms)"),
    ("tokens_after", "tokens generated after detection"),
    ("last_chunk_s", "passing run: request → last chunk (s)"),
    ("last_chunk_lag_ms", "last chunk after last token (ms)"),
]

_PASSED = ValidationResult(True)
_UNKNOWN = PartialValidationResult("unknown")


def sentences_text(n: int, words: tuple[int, int], *, fail_at: int | None, seed: int = 3) -> str:
    """*n* sentences of *words* (min, max) words each; sentence *fail_at* (1-based) holds the planted word."""
    rng = random.Random(seed)
    out = []
    for i in range(1, n + 1):
        chosen = [rng.choice(_WORDS) for _ in range(rng.randint(*words))]
        if i == fail_at:
            chosen[len(chosen) // 2] = PLANTED
        out.append(" ".join(chosen).capitalize() + ".")
    return " ".join(out) + " "


class FastCheck(Requirement):
    """Fails a sentence holding the planted word, at once; records when it said so."""

    def __init__(self, probe: dict[str, Any]) -> None:
        super().__init__("no planted word")
        self.probe = probe

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        if PLANTED in chunk:
            self.probe["verdict_at"] = time.perf_counter()
            self.probe["sent_at_verdict"] = self.probe["generation"].deltas_sent
            return PartialValidationResult("fail", reason="planted word")
        return _UNKNOWN

    async def validate(self, backend: Any, ctx: Any, *, format: Any = None, model_options: Any = None) -> Any:
        return _PASSED


class Judge(Requirement):
    """Takes 150 ms per chunk and has no opinion (an LLM judge's latency, without the model)."""

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        await asyncio.sleep(JUDGE_S)
        return _UNKNOWN

    async def validate(self, backend: Any, ctx: Any, *, format: Any = None, model_options: Any = None) -> Any:
        return _PASSED


def concurrent_judge() -> Requirement | None:
    """A judge declared stateless with ``concurrency=4``, or None if this engine has no such option."""
    if "concurrency" not in inspect.signature(Requirement.__init__).parameters:
        return None
    judge: Requirement = Judge("judge", concurrency=4)  # type: ignore[call-arg]
    return judge


class _Barrier:
    """Per-chunk barrier: chunk n is finished once every one of *parties* requirements finished it."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self._finished: dict[int, int] = {}
        self._waiters: dict[int, asyncio.Future[None]] = {}

    async def wait(self, n: int) -> None:
        if self._finished.get(n, 0) >= self.parties:
            return
        waiter = self._waiters.get(n)
        if waiter is None:
            waiter = self._waiters[n] = asyncio.get_running_loop().create_future()
        await asyncio.shield(waiter)

    def finish(self, n: int) -> None:
        count = self._finished[n] = self._finished.get(n, 0) + 1
        waiter = self._waiters.get(n)
        if count >= self.parties and waiter is not None and not waiter.done():
            waiter.set_result(None)


class InStrictOrder(Requirement):
    """Wraps a requirement so that it starts chunk n+1 only after every requirement finished chunk n."""

    def __init__(self, inner: Requirement, barrier: _Barrier) -> None:
        super().__init__(inner.description)
        self.inner = inner
        self.barrier = barrier
        self._next = 0

    def __copy__(self) -> InStrictOrder:
        # The engine copies requirements; the copy wraps a copy of the inner one, same barrier.
        return InStrictOrder(copy.copy(self.inner), self.barrier)

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        n = self._next
        self._next += 1
        if n:
            await self.barrier.wait(n - 1)
        try:
            return await self.inner.stream_validate(chunk, backend=backend, ctx=ctx)
        finally:
            self.barrier.finish(n)

    async def validate(self, backend: Any, ctx: Any, *, format: Any = None, model_options: Any = None) -> Any:
        return await self.inner.validate(backend, ctx, format=format, model_options=model_options)


def requirements_for(mode: str, probe: dict[str, Any]) -> list[Requirement]:
    """The fast check and the judge, as *mode* schedules them."""
    if mode == ENGINE_CONCURRENT:
        judge = concurrent_judge()
        assert judge is not None
        return [FastCheck(probe), judge]
    reqs: list[Requirement] = [FastCheck(probe), Judge("judge")]
    if mode == STRICT:
        barrier = _Barrier(len(reqs))
        return [InStrictOrder(r, barrier) for r in reqs]
    return reqs


async def one_run(deltas: list[str], mode: str) -> dict[str, Any]:
    """One run: when the verdict came (if any), tokens after it, when the last chunk came."""
    probe: dict[str, Any] = {}
    backend = ScriptedBackend(deltas, delay=TOKEN_S)
    arrived: list[float] = []
    original = backend.generate_from_context

    async def generate(action: Any, ctx: Any, **kwargs: Any) -> Any:
        thunk, new_ctx = await original(action, ctx, **kwargs)
        probe["generation"] = thunk.generation
        thunk.deltas.subscribe(lambda _d: arrived.append(time.perf_counter()))
        return thunk, new_ctx

    backend.generate_from_context = generate  # type: ignore[method-assign]
    start = time.perf_counter()
    result = await stream_with_chunking(
        CBlock("benchmark"), backend, SimpleContext(), requirements=requirements_for(mode, probe)
    )
    last_chunk: float | None = None
    async for event in result.events():
        if isinstance(event, ChunkEvent):
            last_chunk = time.perf_counter()
    await result.acomplete()
    generation = probe["generation"]
    out: dict[str, Any] = {"completed": result.completed, "start": start}
    if "verdict_at" in probe:
        out["detect_s"] = probe["verdict_at"] - start
        out["tokens_after"] = generation.deltas_sent - probe["sent_at_verdict"]
        out["verdict_at"] = probe["verdict_at"]
        out["arrived"] = arrived
    if last_chunk is not None:
        out["last_chunk_s"] = last_chunk - start
        out["last_chunk_lag_ms"] = (last_chunk - arrived[-1]) * 1e3 if arrived else float("nan")
    return out


def _release_index(deltas: list[str], text_before: int) -> int:
    """Index of the delta whose arrival completes a sentence ending at character *text_before*.

    Sentence chunking releases a sentence once whitespace follows its final period.
    """
    total = 0
    for i, delta in enumerate(deltas):
        total += len(delta)
        if total > text_before:
            return i
    return len(deltas) - 1


async def measure(
    label: str, n_sentences: int, words: tuple[int, int], fail_at: int, runs: int, modes: list[str]
) -> list[dict[str, Any]]:
    """Failing and passing runs for every mode, alternating; one row per mode."""
    failing_text = sentences_text(n_sentences, words, fail_at=fail_at)
    passing_text = sentences_text(n_sentences, words, fail_at=None)
    failing = split_deltas(failing_text, TOKEN_CHARS)
    passing = split_deltas(passing_text, TOKEN_CHARS)
    sentence_end = failing_text.index(".", failing_text.index(PLANTED)) + 1
    release = _release_index(failing, sentence_end)
    samples: dict[str, dict[str, list[float]]] = {
        m: {
            "detect_s": [],
            "detect_lag_ms": [],
            "tokens_after": [],
            "last_chunk_s": [],
            "last_chunk_lag_ms": [],
        }
        for m in modes
    }
    for _, mode in alternate(runs, modes):
        fail_run = await one_run(failing, mode)
        if fail_run["completed"] or "detect_s" not in fail_run:
            raise RuntimeError(f"{label}, {mode}: the planted failure was not detected")
        samples[mode]["detect_s"].append(fail_run["detect_s"])
        samples[mode]["tokens_after"].append(fail_run["tokens_after"])
        samples[mode]["detect_lag_ms"].append((fail_run["verdict_at"] - fail_run["arrived"][release]) * 1e3)
        pass_run = await one_run(passing, mode)
        if not pass_run["completed"]:
            raise RuntimeError(f"{label}, {mode}: the passing run did not complete")
        samples[mode]["last_chunk_s"].append(pass_run["last_chunk_s"])
        samples[mode]["last_chunk_lag_ms"].append(pass_run["last_chunk_lag_ms"])
    return [
        {"text": label, "mode": mode, "runs": runs, "tokens": len(failing), "fail_at_sentence": fail_at}
        | {key: summarize(values) for key, values in samples[mode].items()}
        for mode in modes
    ]


def plan(quick: bool) -> list[tuple[str, int, tuple[int, int], int, int]]:
    """(label, sentences, words per sentence, failing sentence, runs per mode)."""
    if quick:
        return [("short sentences", 4, (2, 5), 3, 1)]
    return [("short sentences", 16, (2, 5), 14, 5), ("typical sentences", 12, (6, 18), 10, 3)]


def main(args: argparse.Namespace) -> None:
    modes = [STRICT, ENGINE] + ([ENGINE_CONCURRENT] if concurrent_judge() is not None else [])
    p = plan(args.quick)

    async def run() -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for label, n, words, fail_at, runs in p:
            rows.extend(await measure(label, n, words, fail_at, runs, modes))
        return rows

    rows = run_async(run)
    notes = [
        f"One {TOKEN_CHARS}-character token every {TOKEN_S * 1e3:g} ms; a fast check and a judge taking "
        f"{JUDGE_S * 1e3:g} ms per sentence; sentence chunking; median [min, max]; modes alternate "
        "run by run.",
        "Strict order: each requirement wrapped so it starts chunk n+1 only after every requirement finished "
        "chunk n (a shared per-chunk barrier); engine: the requirements unwrapped, as the engine "
        "schedules them.",
        "Detection lag: the fast check's verdict minus the arrival of the token that completed the failing "
        "sentence. Last-chunk lag: the last ChunkEvent minus the arrival of the last token.",
    ]
    if ENGINE_CONCURRENT not in modes:
        notes.append(
            "'engine, judge concurrency=4' not measured: this engine's Requirement takes no "
            "concurrency option."
        )
    write_result(
        "scheduling",
        title="Slow validators: strict order against the engine's scheduling",
        columns=COLUMNS,
        rows=rows,
        params={
            "token_s": TOKEN_S,
            "token_chars": TOKEN_CHARS,
            "judge_s": JUDGE_S,
            "modes": modes,
            "plan": [list(x) for x in p],
        },
        notes=notes,
        quick=args.quick,
        out=args.out,
    )


if __name__ == "__main__":
    main(parse_args(__doc__ or ""))
