"""The gateway (``rxllm serve``) under load: added latency per chunk, streams per worker, disconnects.

Three processes, as in production: a paced fake OpenAI-compatible upstream (one
``chat.completion.chunk`` every 20 ms per stream, each carrying the monotonic clock reading
of its write), the gateway (``rxllm serve``: one worker, then ``--workers 2`` under gunicorn
with aiohttp's worker) with one cheap check so every chunk is validated, and the load
generator (this process: N concurrent streaming aiohttp clients).

Figures, for each N of a stated grid:

* delay from the upstream's write of a chunk to the client's read of it (CLOCK_MONOTONIC is
  one clock for every process of the machine), p50 and p99; the same clients read the
  upstream directly for the floor, and the gateway's added latency is the difference;
* streams per worker at p99 < 10 ms: the largest N of the grid whose p99 stays under 10 ms,
  for one worker and for two (target: two workers ≥ 1.7x one, where cores are free);
* the CPU each process took in the window (a share of one core), so a reader can see what
  bounds the figure on a small machine (the load generator and the upstream compete with the
  workers for the same cores);
* client disconnect → the upstream sees its connection close, p50 and p99, through one worker.

Run: ``python benchmarks/gateway.py [--quick] [--out PATH]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from _harness import RESULTS_DIR, parse_args, percentile, summarize, write_result

ROOT = Path(__file__).resolve().parent.parent

PERIOD = 0.02
"""Seconds between two chunks of one upstream stream."""
TARGET_P99_MS = 10.0
TARGET_SCALING = 1.7
MODEL = "bench"

COLUMNS = [
    ("mode", "mode"),
    ("streams", "streams"),
    ("chunks", "chunks read"),
    ("delay_p50_ms", "delay p50 (ms)"),
    ("delay_p99_ms", "delay p99 (ms)"),
    ("added_p50_ms", "added p50 (ms)"),
    ("added_p99_ms", "added p99 (ms)"),
    ("errors", "errors"),
    ("cpu_gateway", "gateway CPU (cores)"),
    ("cpu_upstream", "upstream CPU (cores)"),
    ("cpu_loadgen", "load generator CPU (cores)"),
]


def now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the paced upstream (a child process) ---------------------------------------------------------


def _sse(obj: Any) -> bytes:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n".encode()


def _chunk(content: str | None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return _sse(
        {"id": "b", "object": "chat.completion.chunk", "created": 0, "model": MODEL, "choices": [choice]}
    )


async def _upstream(port: int, tokens: int) -> None:
    from aiohttp import web

    disconnects: dict[str, int] = {}

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        ident = str(body["messages"][-1]["content"])
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        try:
            await response.prepare(request)
            await response.write(_sse({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}))
            start = time.monotonic()
            for k in range(tokens):
                await asyncio.sleep(max(0.0, start + (k + 1) * PERIOD - time.monotonic()))
                await response.write(_chunk(f"T{now_ns()}. "))
            await response.write(_chunk(None, "stop") + b"data: [DONE]\n\n")
            await response.write_eof()
        except (asyncio.CancelledError, ConnectionError):
            disconnects[ident] = now_ns()
            raise
        return response

    async def seen(request: web.Request) -> web.Response:
        return web.json_response(disconnects)

    app = web.Application(handler_args={"handler_cancellation": True})
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/disconnects", seen)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    await asyncio.Event().wait()


# -- processes ----------------------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    """*pid* and its descendants (gunicorn's workers)."""
    out = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                out.extend(_tree(int(child)))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of *pid* and its descendants so far (0 where /proc is missing)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for member in _tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / ticks


async def _wait_ready(url: str, proc: subprocess.Popen[bytes], within: float = 120) -> None:
    import aiohttp

    async with asyncio.timeout(within), aiohttp.ClientSession() as http:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url) as response:
                    if response.status in (200, 405):
                        return
            await asyncio.sleep(0.2)


@contextlib.contextmanager
def _process(command: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGINT if "serve" in command else signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.asynccontextmanager
async def upstream(tokens: int) -> AsyncIterator[tuple[str, int]]:
    """The paced upstream in its own process; yield its base URL and pid."""
    port = free_port()
    command = [sys.executable, __file__, "--upstream", str(port), str(tokens)]
    with _process(command) as proc:
        await _wait_ready(f"http://127.0.0.1:{port}/disconnects", proc)
        yield f"http://127.0.0.1:{port}/v1", proc.pid


@contextlib.asynccontextmanager
async def gateway(upstream_url: str, workers: int) -> AsyncIterator[tuple[str, int]]:
    """``rxllm serve`` in front of *upstream_url*; yield its base URL and pid."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "rxllm.toml"
        # One cheap check, so every chunk goes through validation; large limits so load is not refused.
        config.write_text(
            f'backend = "openai"\nbase_url = "{upstream_url}"\nmodel = "{MODEL}"\n'
            f"max_chars = 1000000000\nmax_streams = 100000\nport = {port}\nworkers = {workers}\n"
        )
        command = [sys.executable, "-m", "engine", "serve", "--config", str(config)]
        with _process(command) as proc:
            await _wait_ready(f"http://127.0.0.1:{port}/healthz", proc)
            yield f"http://127.0.0.1:{port}/v1", proc.pid


# -- the load generator (this process) ---------------------------------------------------------------


async def load(url: str, streams: int, timing: dict[str, float], pids: dict[str, int]) -> dict[str, Any]:
    """*streams* clients reading streams from *url*; delays of the chunks read in the window."""
    import aiohttp

    delays: list[float] = []
    errors: list[str] = []
    window: list[int] = [0, 0]

    async def client(i: int, session: aiohttp.ClientSession) -> None:
        await asyncio.sleep(timing["ramp"] * i / max(1, streams))
        body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": f"c{i}"}]}
        try:
            async with session.post(f"{url}/chat/completions", json=body) as response:
                if response.status != 200:
                    errors.append(f"status {response.status}")
                    return
                async for line in response.content:
                    read = now_ns()
                    at = line.find(b'"content":"')
                    if at < 0:
                        continue
                    stamp = line[at + 11 :].lstrip(b" \\n")  # the gateway hands on the gap before a chunk
                    if not stamp.startswith(b"T"):
                        continue
                    sent = int(stamp[1 : stamp.index(b".")])
                    if window[0] <= sent <= window[1]:
                        delays.append((read - sent) / 1e6)
        except (aiohttp.ClientError, ValueError) as exc:
            errors.append(type(exc).__name__)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None)
    ) as session:
        tasks = [asyncio.create_task(client(i, session)) for i in range(streams)]
        await asyncio.sleep(timing["ramp"] + timing["warmup"])
        window[0], window[1] = now_ns(), now_ns() + int(timing["window_s"] * 1e9)
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        own_before = time.process_time()
        await asyncio.sleep(timing["window_s"])
        cpu = {name: (cpu_seconds(pid) - cpu_before[name]) / timing["window_s"] for name, pid in pids.items()}
        cpu["loadgen"] = (time.process_time() - own_before) / timing["window_s"]
        await asyncio.sleep(0.2)  # the window's last chunks arrive
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "streams": streams,
        "chunks": len(delays),
        "delay_p50_ms": percentile(delays, 0.5),
        "delay_p99_ms": percentile(delays, 0.99),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "cpu_gateway": cpu.get("gateway", float("nan")),
        "cpu_upstream": cpu["upstream"],
        "cpu_loadgen": cpu["loadgen"],
    }


async def disconnects(gateway_url: str, upstream_url: str, runs: int) -> list[float]:
    """Client closes its connection after the first chunk → the upstream sees its connection close (ms)."""
    import aiohttp

    closed: dict[str, int] = {}
    async with aiohttp.ClientSession() as session:
        for i in range(runs):
            ident = f"d{i}"
            body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": ident}]}
            response = await session.post(f"{gateway_url}/chat/completions", json=body)
            async for line in response.content:
                if b'"content":"' in line and b'"content":""' not in line:
                    break
            closed[ident] = now_ns()
            response.close()  # drops the connection
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        root = upstream_url.removesuffix("/v1")
        async with session.get(f"{root}/disconnects") as answer:
            seen = await answer.json()
    return [(seen[ident] - at) / 1e6 for ident, at in closed.items() if ident in seen]


def plan(quick: bool) -> dict[str, Any]:
    """The grid of concurrent streams and the timing of each point."""
    if quick:
        return {"grid": [5, 20], "timing": {"ramp": 0.2, "warmup": 0.3, "window_s": 0.5}, "disconnects": 5}
    return {
        "grid": [50, 100, 200, 400, 800, 1_200, 1_600, 2_000],
        "timing": {"ramp": 2.0, "warmup": 1.0, "window_s": 5.0},
        "disconnects": 100,
    }


def _largest_under_target(rows: list[dict[str, Any]], mode: str) -> int:
    under = [
        r["streams"]
        for r in rows
        if r["mode"] == mode and r["errors"] == 0 and r["delay_p99_ms"] < TARGET_P99_MS
    ]
    return max(under, default=0)


async def run(p: dict[str, Any]) -> tuple[list[dict[str, Any]], list[float]]:
    timing = p["timing"]
    seconds = timing["ramp"] + timing["warmup"] + timing["window_s"] + 5
    tokens = int(seconds / PERIOD) + 10
    rows: list[dict[str, Any]] = []
    async with upstream(tokens) as (upstream_url, upstream_pid):
        direct: dict[int, dict[str, Any]] = {}
        for n in p["grid"]:
            row = {"mode": "direct", **await load(upstream_url, n, timing, {"upstream": upstream_pid})}
            row["added_p50_ms"] = row["added_p99_ms"] = float("nan")  # the floor itself
            direct[n] = row
            rows.append(row)
        dropped: list[float] = []
        for workers in (1, 2):
            mode = f"gateway, {workers} worker{'s' if workers > 1 else ''}"
            async with gateway(upstream_url, workers) as (url, pid):
                for n in p["grid"]:
                    row = {
                        "mode": mode,
                        **await load(url, n, timing, {"upstream": upstream_pid, "gateway": pid}),
                    }
                    row["added_p50_ms"] = row["delay_p50_ms"] - direct[n]["delay_p50_ms"]
                    row["added_p99_ms"] = row["delay_p99_ms"] - direct[n]["delay_p99_ms"]
                    rows.append(row)
                if workers == 1:
                    dropped = await disconnects(url, upstream_url, p["disconnects"])
    return rows, dropped


def main(args: argparse.Namespace) -> None:
    p = plan(args.quick)
    rows, dropped = asyncio.run(run(p))
    one = _largest_under_target(rows, "gateway, 1 worker")
    two = _largest_under_target(rows, "gateway, 2 workers")
    floor = _largest_under_target(rows, "direct")
    scaling = two / one if one else float("nan")
    cores = os.cpu_count() or 1
    busiest = max((r for r in rows if r["mode"] == "gateway, 2 workers"), key=lambda r: r["streams"])
    taken = busiest["cpu_upstream"] + busiest["cpu_loadgen"]
    disconnect = summarize(dropped)
    notes = [
        f"Each stream: one chunk every {PERIOD * 1e3:g} ms from the upstream (a separate process), "
        "sentence chunking and one check in the gateway; clients start over a "
        f"{p['timing']['ramp']:g} s ramp, {p['timing']['warmup']:g} s warm-up, then a "
        f"{p['timing']['window_s']:g} s window. Delay: upstream write → client read of that chunk "
        "(CLOCK_MONOTONIC, one clock for all processes). Added: gateway minus direct at the same N.",
        f"Streams at p99 < {TARGET_P99_MS:g} ms (grid {p['grid']}): direct {floor:,}; one worker {one:,}; "
        f"two workers {two:,} ({two / 2:,.0f} per worker). "
        + (
            f"Two workers / one: {scaling:.2f}x (target ≥ {TARGET_SCALING:g}x where cores are free: "
            f"{'met' if scaling >= TARGET_SCALING else 'not met'})."
            if one
            else "One worker held no N of the grid under the target, so there is no ratio to report."
        ),
        f"This machine has {cores} cores; at {busiest['streams']:,} streams the upstream and the load "
        f"generator took {taken:.2f} cores beside the gateway's {busiest['cpu_gateway']:.2f}, so "
        + (
            "the two workers competed with them for the cores: the scaling figure is bounded by the machine."
            if taken > cores - 2 + 0.5
            else "two cores were left to the workers."
        ),
        f"Client disconnect → upstream saw its connection close (one worker, {disconnect['n']} runs): "
        f"p50 {percentile(dropped, 0.5):.2f} ms, p99 {percentile(dropped, 0.99):.2f} ms.",
    ]
    errors = [r for r in rows if r["errors"]]
    if errors:
        notes.append(
            "Points with errors (not counted under the target): "
            + "; ".join(
                f"{r['mode']} at {r['streams']:,}: {r['errors']} ({r['first_error']})" for r in errors
            )
        )
    write_result(
        "gateway",
        title="Gateway: delay per chunk through rxllm serve, 1 and 2 workers, and disconnects",
        columns=COLUMNS,
        rows=rows,
        params={"period_s": PERIOD, "plan": p, "target_p99_ms": TARGET_P99_MS},
        notes=notes,
        quick=args.quick,
        out=args.out if args.out is not None else RESULTS_DIR / "gateway.json",
        extra={
            "largest_streams_under_target": {"direct": floor, "one_worker": one, "two_workers": two},
            "scaling_two_workers": scaling,
            "disconnect_to_upstream_close_ms": {
                **disconnect,
                "p50": percentile(dropped, 0.5),
                "p99": percentile(dropped, 0.99),
                "samples": dropped,
            },
        },
    )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--upstream":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_upstream(int(sys.argv[2]), int(sys.argv[3])))
    else:
        main(parse_args(__doc__ or ""))
