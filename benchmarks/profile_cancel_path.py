"""Where the cancel path's time goes: verdict → the producer's ``finally``, traced.

Runs the cancel scenario of ``cancel_latency.py`` (three requirements, the first fails
the second sentence, 4-character deltas) and reports, side by side in one run:

- rxllm's verdict → producer ``finally`` latency (median of N runs, per pacing);
- the in-step floor: a producer that runs the same check inline and returns;
- the cross-task floor: a producer task cancelled by a checking task;
- with ``--trace``: every Python function entered between the verdict and the
  producer's ``finally`` in one run (``sys.setprofile``), grouped by module, so a
  change to the path can be read call by call.

Run: ``python benchmarks/profile_cancel_path.py [--trace] [--runs N]``
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import sys
import time
from typing import Any

from backends.scripted import ScriptedBackend
from engine.assembly import stream_with_chunking
from engine.core.components import CBlock
from engine.core.context import SimpleContext
from engine.core.requirements import PartialValidationResult, Requirement
from operators.chunking import Chunker, SentenceChunking

TEXT = "One two three four five. Six seven eight nine ten. Eleven twelve thirteen. Fourteen fifteen."
DELTAS = [TEXT[i : i + 4] for i in range(0, len(TEXT), 4)]
UNKNOWN = PartialValidationResult("unknown")
FAIL = PartialValidationResult("fail", reason="second sentence")


class Marks:
    verdict_at = 0.0
    finally_at = 0.0


class FailSecond(Requirement):
    def __init__(self, marks: Marks) -> None:
        super().__init__("fails the second chunk")
        self.marks = marks
        self.seen = 0

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        self.seen += 1
        if self.seen == 2:
            self.marks.verdict_at = time.perf_counter()
            return FAIL
        return UNKNOWN


class NoOp(Requirement):
    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        return UNKNOWN


class Backend(ScriptedBackend):
    def __init__(self, delay: float, marks: Marks) -> None:
        super().__init__(DELTAS, delay=delay)
        self.marks = marks

    async def _produce(self, generation: Any, stream: bool, deltas: Any = None) -> Any:
        # ScriptedBackend's producer, with the finally timed (wrapping it in another
        # generator would add the inner generator's finalizer hook to the path).
        try:
            for delta in deltas if deltas is not None else self.deltas:
                await asyncio.sleep(self.delay)
                generation.deltas_sent += 1
                yield delta
        finally:
            self.marks.finally_at = time.perf_counter()


async def ours(delay: float) -> float:
    marks = Marks()
    result = await stream_with_chunking(
        CBlock("x"), Backend(delay, marks), SimpleContext(), requirements=[FailSecond(marks), NoOp(), NoOp()]
    )
    async for _ in result.events():
        pass
    await result.acomplete()
    return marks.finally_at - marks.verdict_at


async def floor_in_step(delay: float) -> float:
    marks = Marks()
    req = FailSecond(marks)
    others = [NoOp(), NoOp()]

    async def producer() -> None:
        chunker = Chunker(SentenceChunking())
        try:
            for d in DELTAS:
                await asyncio.sleep(delay)
                for c in chunker.feed(d):
                    result = await req.stream_validate(c.text, backend=None, ctx=None)  # type: ignore[arg-type]
                    for o in others:
                        await o.stream_validate(c.text, backend=None, ctx=None)  # type: ignore[arg-type]
                    if result.success == "fail":
                        return
        finally:
            marks.finally_at = time.perf_counter()

    await producer()
    return marks.finally_at - marks.verdict_at


async def floor_cross_task(delay: float) -> float:
    marks = Marks()
    req = FailSecond(marks)
    queue: asyncio.Queue[str] = asyncio.Queue()

    async def producer() -> None:
        try:
            for d in DELTAS:
                await asyncio.sleep(delay)
                queue.put_nowait(d)
        finally:
            marks.finally_at = time.perf_counter()

    task = asyncio.create_task(producer())
    chunker = Chunker(SentenceChunking())
    while True:
        d = await queue.get()
        for c in chunker.feed(d):
            if (await req.stream_validate(c.text, backend=None, ctx=None)).success == "fail":  # type: ignore[arg-type]
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return marks.finally_at - marks.verdict_at


async def trace_once(delay: float) -> None:
    marks = Marks()
    calls: list[str] = []
    state = {"on": False}

    def prof(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_name == "stream_validate" and not state["on"]:
            return
        if event in ("call", "c_call") and state["on"]:
            name = frame.f_code.co_name if event == "call" else getattr(arg, "__qualname__", str(arg))
            mod = frame.f_globals.get("__name__", "?")
            calls.append(f"{mod}:{name}" + ("" if event == "call" else " [C]"))

    class TracedFail(FailSecond):
        async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
            self.seen += 1
            if self.seen == 2:
                self.marks.verdict_at = time.perf_counter()
                state["on"] = True
                return FAIL
            return UNKNOWN

    class TracedBackend(Backend):
        async def _produce(self, generation: Any, stream: bool, deltas: Any = None) -> Any:
            try:
                for delta in deltas if deltas is not None else self.deltas:
                    await asyncio.sleep(self.delay)
                    yield delta
            finally:
                state["on"] = False
                self.marks.finally_at = time.perf_counter()

    sys.setprofile(prof)
    try:
        result = await stream_with_chunking(
            CBlock("x"),
            TracedBackend(delay, marks),
            SimpleContext(),
            requirements=[TracedFail(marks), NoOp(), NoOp()],
        )
        async for _ in result.events():
            pass
        await result.acomplete()
    finally:
        sys.setprofile(None)
    print(f"\n{len(calls)} calls between the verdict and the producer's finally (pacing {delay * 1e3:g} ms):")
    by_module = collections.Counter(c.split(":")[0] for c in calls)
    for mod, n in by_module.most_common():
        print(f"  {n:4d}  {mod}")
    print("  first 60 in order:")
    for c in calls:
        print("     ", c)


async def main(runs: int, trace: bool) -> None:
    for delay in (0.0, 0.001, 0.02):
        n = runs if delay < 0.02 else max(5, runs // 4)
        samples: dict[str, list[float]] = {"rxllm": [], "floor in-step": [], "floor cross-task": []}
        for _ in range(n):  # alternate the three on every repeat
            samples["rxllm"].append(await ours(delay))
            samples["floor in-step"].append(await floor_in_step(delay))
            samples["floor cross-task"].append(await floor_cross_task(delay))
        med = {k: statistics.median(v) * 1e6 for k, v in samples.items()}
        print(
            f"pacing {delay * 1e3:4g} ms  n={n:3d}  "
            + "  ".join(f"{k}: {v:7.1f} µs" for k, v in med.items())
            + f"  rxllm/in-step {med['rxllm'] / med['floor in-step']:.1f}x"
            + f"  rxllm/cross-task {med['rxllm'] / med['floor cross-task']:.2f}x"
        )
    if trace:
        await trace_once(0.001)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.trace))
