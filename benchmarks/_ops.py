"""The worker ops every engine serves, written once: ``cancel``, ``stream`` and ``fanout``.

Not a benchmark itself. Standard library only: ``_ours`` (rxllm, in the project venv) and
``_mellea`` (in each Mellea venv) build their ``OPS`` with :func:`engine_ops` from their own
run function and requirements, so every engine is measured by the same code and answers
with the same arguments and results.

An engine's *run* is ``await run(deltas, requirements, delay=..., probe=...)`` and returns
``(record, events consumed, completed)``: one run, every event consumed, where *record*
is the generation's record with ``deltas_sent`` and ``cancelled_at`` (the
``perf_counter`` reading of the producer's ``finally`` when it was cancelled, else None).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

from _harness import package_versions

__all__ = ["Probe", "cancel_samples", "engine_ops"]


class Probe:
    """Shared by a failing requirement and its copies (``copy`` is shallow): the verdict's time."""

    def __init__(self) -> None:
        self.record: Any = None
        """The generation's record (``deltas_sent``): set by the backend when generation starts, or
        found through :attr:`find_record` (a shipped backend, which knows nothing of probes)."""
        self.find_record: Callable[[], Any] | None = None
        self.verdict_at: float | None = None
        self.sent_at_verdict = 0

    def verdict(self) -> None:
        """Note, inside the validator, the moment it answers "fail" and the deltas sent by then."""
        if self.record is None and self.find_record is not None:
            self.record = self.find_record()
        assert self.record is not None, "the backend did not hand its record to the probe"
        self.sent_at_verdict = self.record.deltas_sent
        self.verdict_at = time.perf_counter()  # last: the bookkeeping above is not the engine's time


async def cancel_samples(
    once: Callable[[], Awaitable[tuple[float, int]]], runs: int
) -> dict[str, list[float]]:
    """*runs* of *once* (``(verdict -> finally in seconds, deltas after the verdict)``), garbage
    collected before each: ``{"latency_us": [...], "deltas_after": [...]}``."""
    latency: list[float] = []
    after: list[float] = []
    for _ in range(runs):
        gc.collect()
        seconds, deltas_after = await once()
        latency.append(seconds * 1e6)
        after.append(deltas_after)
    return {"latency_us": latency, "deltas_after": after}


def engine_ops(
    engine: str,
    run: Callable[..., Awaitable[tuple[Any, int, bool]]],
    no_op: Callable[[], Any],
    fail_on_chunk: Callable[..., Any],
) -> dict[str, Callable[..., Any]]:
    """The ops of *engine* (its name, for messages): ``cancel``, ``stream``, ``fanout`` and ``engine``.

    *no_op* makes a requirement that does no work; ``fail_on_chunk(n, probe, await_once=...)``
    one that fails chunk *n* (1-based) and calls ``probe.verdict()`` as it does.
    """

    async def op_cancel(
        deltas: list[str], delay: float, fail_on: int, await_once: bool, runs: int
    ) -> dict[str, list[float]]:
        """*runs* failing streams: verdict -> the producer's ``finally`` (µs), deltas after the verdict."""

        async def once() -> tuple[float, int]:
            probe = Probe()
            reqs = [fail_on_chunk(fail_on, probe, await_once=await_once), no_op(), no_op()]
            record, _, completed = await run(deltas, reqs, delay=delay, probe=probe)
            if completed or probe.verdict_at is None or record.cancelled_at is None:
                raise RuntimeError(
                    f"{engine}'s failing run was not cancelled (completed={completed}, "
                    f"verdict_at={probe.verdict_at}, cancelled_at={record.cancelled_at}): the engine did "
                    "not stop the generation on 'fail', so the side-by-side is not comparable"
                )
            return record.cancelled_at - probe.verdict_at, record.deltas_sent - probe.sent_at_verdict

        return await cancel_samples(once, runs)

    async def op_stream(deltas: list[str], runs: int) -> dict[str, Any]:
        """*runs* timed passing streams of *deltas*, three no-op requirements, every event consumed."""
        reqs = [no_op() for _ in range(3)]
        seconds: list[float] = []
        events = 0
        for _ in range(runs):
            gc.collect()
            start = time.perf_counter()
            _, events, completed = await run(deltas, reqs)
            seconds.append(time.perf_counter() - start)
            if not completed:
                raise RuntimeError(
                    f"a passing {engine} run did not complete: a no-op requirement cannot fail"
                )
        return {"seconds": seconds, "events": events}

    async def op_fanout(deltas: list[str], streams: int) -> dict[str, Any]:
        """*streams* concurrent passing streams on one loop: wall seconds and failures."""
        reqs = [no_op() for _ in range(3)]
        gc.collect()
        start = time.perf_counter()
        results = await asyncio.gather(*(run(deltas, reqs) for _ in range(streams)), return_exceptions=True)
        seconds = time.perf_counter() - start
        failures = sum(1 for r in results if isinstance(r, BaseException) or not r[2])
        return {"seconds": seconds, "failures": failures}

    async def op_engine() -> str:
        """The engine this worker runs (the harness checks it: a venv with the wrong version fails)."""
        return engine

    async def op_versions() -> dict[str, str]:
        """The versions installed where this worker runs (its engine's own, read in its own venv)."""
        return package_versions()

    return {
        "cancel": op_cancel,
        "stream": op_stream,
        "fanout": op_fanout,
        "engine": op_engine,
        "versions": op_versions,
    }
