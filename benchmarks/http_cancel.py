"""Cancel latency over HTTP: from the failing verdict to the server seeing the client disconnect.

For each backend (``OllamaBackend`` against a fake Ollama server, ``OpenAIBackend``
against a fake OpenAI-compatible server; both real aiohttp servers on 127.0.0.1 in
this process, from ``tests/fake_servers.py``) and each pacing of the server (one
frame every 1 ms and every 10 ms), 100 ``stream_with_chunking`` runs each fail the
second sentence. The verdict is the ``perf_counter`` reading inside the validator as
it returns "fail". The server records, per request, the ``perf_counter`` after every
frame it wrote and the moment its handler saw the connection drop (aiohttp's
``connection_lost`` cancelling the handler). Reported: verdict -> connection closed
by the client (``generation.connection_closed_at``), verdict -> disconnect seen by
the server (median and p99), and the frames the server wrote after the verdict.

Client and server share one event loop and one process, so the figures include the
loop turns between the two ends (a separate server process would see the FIN from
the kernel without waiting for the client's callbacks to finish).

Run: ``python benchmarks/http_cancel.py [--quick] [--out PATH]``
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `tests.fake_servers`

from _harness import parse_args, run_async, sentence_prefix_deltas, summarize, us, write_result

from backends import OllamaBackend, OpenAIBackend
from backends._http import HttpBackend
from engine.assembly import stream_with_chunking
from engine.core.components import CBlock
from engine.core.context import SimpleContext
from engine.core.requirements import PartialValidationResult, Requirement, ValidationResult
from tests.fake_servers import FakeOllamaServer, FakeOpenAIServer, FakeServer, Reply

FAIL_ON_SENTENCE = 2
DELTA_SIZE = 4
INTERVALS_MS = (1.0, 10.0)
RUNS = 100

COLUMNS = [
    ("backend", "backend"),
    ("interval_ms", "frame interval (ms)"),
    ("runs", "runs"),
    ("verdict_to_requested_us", "verdict → cancel requested (µs)"),
    ("verdict_to_closed_us", "verdict → client closed (µs)"),
    ("verdict_to_server_us", "verdict → server saw disconnect (µs)"),
    ("verdict_to_server_p99_us", "p99 (µs)"),
    ("frames_after_verdict", "frames written after verdict"),
    ("runs_with_frames_after", "runs with any frame after verdict"),
]


class FailOnSentence(Requirement):
    """Fails sentence *n* (1-based) and records the verdict time."""

    def __init__(self, n: int, sink: list[float]) -> None:
        super().__init__("fails on purpose")
        self.n = n
        self.sink = sink
        self.seen = 0

    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        self.seen += 1
        if self.seen == self.n:
            self.sink.append(time.perf_counter())
            return PartialValidationResult("fail", reason="benchmark verdict")
        return PartialValidationResult("unknown")

    async def validate(
        self, backend: Any, ctx: Any, *, format: Any = None, model_options: Any = None
    ) -> ValidationResult:
        return ValidationResult(True)


def percentile(values: list[float], q: float) -> float:
    """The *q*-quantile (0..1) by the nearest-rank method."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def measure(kind: str, interval_ms: float, runs: int) -> dict[str, Any]:
    """*runs* failing streams against one fake server; summarize what the server saw."""
    deltas, _ = sentence_prefix_deltas(FAIL_ON_SENTENCE, DELTA_SIZE)
    reply = Reply(deltas=deltas, delay=interval_ms / 1000)
    server: FakeServer = FakeOllamaServer(reply) if kind == "ollama" else FakeOpenAIServer(reply)
    requested: list[float] = []
    closed: list[float] = []
    seen: list[float] = []
    after: list[float] = []
    async with server:
        backend: HttpBackend = (
            OllamaBackend("bench", base_url=server.url)
            if kind == "ollama"
            else OpenAIBackend("bench", base_url=server.url)
        )
        async with backend:
            for i in range(runs):
                verdicts: list[float] = []
                result = await stream_with_chunking(
                    CBlock("benchmark"),
                    backend,
                    SimpleContext(),
                    requirements=[FailOnSentence(FAIL_ON_SENTENCE, verdicts)],
                )
                async for _event in result.events():
                    pass
                await result.acomplete()
                record = server.requests[i]
                disconnected = await record.wait_disconnected(within=5.0)
                generation = result.mot.generation
                if result.completed or not verdicts or generation.connection_closed_at is None:
                    raise RuntimeError(
                        f"{kind} run {i}: the failing run did not close the connection "
                        f"(completed={result.completed}, verdicts={verdicts}, "
                        f"connection_closed_at={generation.connection_closed_at})"
                    )
                verdict = verdicts[0]
                if generation.cancel_requested_at is not None:
                    requested.append(us(generation.cancel_requested_at - verdict))
                closed.append(us(generation.connection_closed_at - verdict))
                seen.append(us(disconnected - verdict))
                after.append(record.frames_written_after(verdict))
    return {
        "backend": "OllamaBackend" if kind == "ollama" else "OpenAIBackend",
        "interval_ms": interval_ms,
        "runs": runs,
        "verdict_to_requested_us": summarize(requested),
        "verdict_to_closed_us": summarize(closed),
        "verdict_to_server_us": summarize(seen),
        "verdict_to_server_p99_us": percentile(seen, 0.99),
        "frames_after_verdict": summarize(after),
        "runs_with_frames_after": sum(1 for a in after if a > 0),
        "samples": {"verdict_to_server_us": seen, "frames_after_verdict": after},
    }


def main(args: argparse.Namespace) -> None:
    runs = 10 if args.quick else RUNS

    async def run() -> list[dict[str, Any]]:
        return [
            await measure(kind, interval, runs) for kind in ("ollama", "openai") for interval in INTERVALS_MS
        ]

    rows = run_async(run)
    write_result(
        "http_cancel",
        title="Cancel over HTTP: failing verdict → the loopback server sees the disconnect",
        columns=COLUMNS,
        rows=[{k: v for k, v in row.items() if k != "samples"} for row in rows],
        params={
            "fail_on_sentence": FAIL_ON_SENTENCE,
            "delta_chars": DELTA_SIZE,
            "runs": runs,
            "intervals_ms": list(INTERVALS_MS),
            "server": "tests/fake_servers.py, aiohttp on 127.0.0.1, same process and event loop",
        },
        notes=[
            "Median (min-max) over the runs; p99 by nearest rank. Verdict: perf_counter inside the "
            "validator as it returns 'fail'. Cancel requested: the pipeline called the thunk's cancel() "
            "(generation.cancel_requested_at). Client closed: generation.connection_closed_at, set as the "
            "backend closed the response, synchronously inside that cancel(). Server saw disconnect: "
            "perf_counter in the fake server's handler when aiohttp's connection_lost cancelled it.",
            "Frames written after verdict: frames the server handed to its socket after the verdict "
            "(it keeps writing on its own schedule until it sees the disconnect).",
        ],
        quick=args.quick,
        out=args.out,
        extra={"samples": {f"{row['backend']}@{row['interval_ms']}ms": row["samples"] for row in rows}},
    )


if __name__ == "__main__":
    main(parse_args(__doc__ or ""))
