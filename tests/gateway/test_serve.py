"""``rxllm serve`` in its own process: ``GET /metrics`` (Prometheus text, behind the client key),
``--log-format json`` (one object per line, no secret), and the event loop it runs on.

OpenTelemetry's global providers can be set once per process, and the command sets them from
the environment at start-up: so the gateway runs in a subprocess, in front of a loopback fake
upstream in this one."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.fake_servers import FakeOpenAIServer, Reply
from tests.gateway_helpers import MODEL, chat_body, sse_events

KEY = "gw-client-key-123"
SECRET = "sk-upstream-secret-0987654321"
ANSWER = Reply(deltas=["The sky ", "is blue. ", "It is ", "Celsius ", "cold. ", "The end."])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def serve(*flags: str, env: dict[str, str] | None = None) -> AsyncIterator[tuple[str, list[str]]]:
    """``rxllm serve FLAGS`` on a loopback port; yield its root URL and (once it has stopped, after
    the block) the lines of its stderr."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine",
        "serve",
        *flags,
        "--port",
        str(port),
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    root = f"http://127.0.0.1:{port}"
    lines: list[str] = []
    try:
        async with asyncio.timeout(120), aiohttp.ClientSession() as http:
            while True:
                if proc.returncode is not None:
                    _, err = await proc.communicate()
                    raise AssertionError(f"rxllm serve exited: {err.decode()}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{root}/healthz") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.2)
        yield root, lines
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        _, raw = await asyncio.wait_for(proc.communicate(), 60)
        lines.extend(raw.decode().splitlines())


async def stream_text(http: aiohttp.ClientSession, root: str, headers: dict[str, str]) -> list[Any]:
    async with http.post(
        f"{root}/v1/chat/completions", json=chat_body(stream=True), headers=headers
    ) as response:
        assert response.status == 200
        return sse_events(await response.text())


@pytest.mark.asyncio
async def test_metrics_on_serve_prometheus_text_behind_the_client_key_with_json_logs() -> None:
    async with FakeOpenAIServer(ANSWER) as upstream:
        flags = ["--backend", "openai", "--base-url", upstream.url, "--model", MODEL, "--api-key", SECRET]
        flags += ["--forbid", "Celsius", "--client-key", KEY, "--log-format", "json"]
        env = {"RXLLM_METRICS_PROMETHEUS": "1"}
        auth = {"Authorization": f"Bearer {KEY}"}
        async with serve(*flags, env=env) as (root, lines), aiohttp.ClientSession() as http:
            events = await stream_text(http, root, auth)
            assert events[-2]["choices"][0]["finish_reason"] == "content_filter"
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                async with http.get(f"{root}/metrics", headers=headers) as response:
                    assert response.status == 401
                    assert "rxllm_" not in await response.text()
            async with http.get(f"{root}/metrics", headers=auth) as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain; version=")
                page = await response.text()
            # An upstream that echoes its key in an error: the log line about it must not carry it.
            upstream.enqueue(Reply(status=500, error=f"bad key {SECRET} here"))
            async with http.post(f"{root}/v1/chat/completions", json=chat_body(), headers=auth) as response:
                assert response.status == 502
        assert upstream.requests[0].headers["Authorization"] == f"Bearer {SECRET}"
    series = {line.split("{")[0] for line in page.splitlines() if line.startswith("rxllm_")}
    assert {"rxllm_streams_active", "rxllm_verdicts_total", "rxllm_run_duration_seconds_bucket"} <= series
    failed = [
        line
        for line in page.splitlines()
        if line.startswith("rxllm_verdicts_total") and 'status="fail"' in line
    ]
    assert failed and float(failed[0].rsplit(" ", 1)[1]) == 1.0, page

    records = [json.loads(line) for line in lines]  # every line of stderr is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records), records
    assert not any(SECRET in line for line in lines), lines
    requests = [r for r in records if r.get("path") == "/v1/chat/completions"]
    assert [(r["method"], r["status"], r["stream"]) for r in requests] == [
        ("POST", 200, True),
        ("POST", 502, False),
    ]
    assert requests[0]["failed_check"]["requirement"] == "forbidden: Celsius"
    assert requests[1]["failed_check"] is None
    assert all(isinstance(r["duration"], float) and r["duration"] >= 0 for r in requests)
    assert any(r["level"] == "WARNING" and "upstream failure" in r["message"] for r in records)


@pytest.mark.asyncio
async def test_metrics_off_answer_404_with_how_to_switch_them_on_and_logs_default_to_text() -> None:
    env = {"RXLLM_METRICS_PROMETHEUS": "", "RXLLM_METRICS_ENABLED": ""}
    flags = ("--backend", "scripted", "--model", MODEL, "--delay", "0")
    async with serve(*flags, env=env) as (root, lines), aiohttp.ClientSession() as http:
        await stream_text(http, root, {})
        async with http.get(f"{root}/metrics") as response:
            assert response.status == 404
            assert "RXLLM_METRICS_PROMETHEUS=1" in await response.text()
    assert lines and all(line.startswith("rxllm serve: ") for line in lines), lines
    assert any("POST /v1/chat/completions -> 200" in line for line in lines), lines


@pytest.mark.asyncio
@pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed")
async def test_rxllm_serve_runs_on_uvloop_when_it_is_installed() -> None:
    async with serve("--backend", "scripted", "--log-format", "json") as (_, lines):
        pass
    loops = [json.loads(line)["message"] for line in lines if "serving on" in line]
    assert len(loops) == 1 and loops[0].endswith("serving on uvloop.Loop"), lines
