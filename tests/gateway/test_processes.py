"""The gateway in its own processes: under gunicorn with aiohttp's worker, 2 workers, as the
deployment guide runs it (``gunicorn 'engine.gateway:create_app()' -k aiohttp.GunicornWebWorker
-w 2``, configured by ``$RXLLM_SERVE_CONFIG`` and ``$RXLLM_SERVE_CLIENT_KEY``), and as
``rxllm serve`` (one worker, and ``--workers 2``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import openai
import pytest

from tests.fake_servers import FakeOpenAIServer
from tests.gateway_helpers import HANGS, MODEL, SLOW, chat_body, close_writer, raw_request
from tests.helpers import free_port

pytest.importorskip("gunicorn")

KEY = "gunicorn-test-key"


@contextlib.asynccontextmanager
async def gunicorn(config: Path, workers: int = 2) -> AsyncIterator[str]:
    """Gunicorn serving the gateway on a loopback port; yield its root URL once it answers."""
    port = free_port()
    env = {
        **os.environ,
        "RXLLM_SERVE_CONFIG": str(config),
        "RXLLM_SERVE_CLIENT_KEY": KEY,
        "RXLLM_METRICS_PROMETHEUS": "1",  # each worker sets up its own exporter in create_app()
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gunicorn",
        "engine.gateway:create_app()",
        "-k",
        "aiohttp.GunicornWebWorker",
        "-w",
        str(workers),
        "-b",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "5",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    root = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(120), aiohttp.ClientSession() as http:
            while True:
                if proc.returncode is not None:
                    _, err = await proc.communicate()
                    raise AssertionError(f"gunicorn exited: {err.decode()}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{root}/healthz") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.2)
        yield root
    finally:
        if proc.returncode is None:
            proc.terminate()
        try:
            _, raw = await asyncio.wait_for(proc.communicate(), 60)
        except TimeoutError:
            proc.kill()
            _, raw = await proc.communicate()
    stderr = raw.decode()
    assert "Traceback" not in stderr, stderr


@pytest.mark.asyncio
async def test_two_gunicorn_workers_serve_validated_streams_and_cancel_the_upstream(tmp_path: Path) -> None:
    async with FakeOpenAIServer(SLOW) as upstream:
        config = tmp_path / "rxllm.toml"
        config.write_text(
            f'backend = "openai"\nbase_url = "{upstream.url}"\nmodel = "{MODEL}"\nforbid = ["Sentence 3"]\n'
        )
        async with gunicorn(config) as root:
            # Both workers answer (a fresh connection each time, until both pids are seen).
            pids: set[int] = set()
            connector = aiohttp.TCPConnector(force_close=True)
            async with asyncio.timeout(60), aiohttp.ClientSession(connector=connector) as http:
                while len(pids) < 2:
                    async with http.get(f"{root}/healthz") as response:
                        pids.add((await response.json())["pid"])
            assert len(pids) == 2

            # The official client streams through a worker and sees the failed check.
            async with openai.AsyncOpenAI(base_url=f"{root}/v1", api_key=KEY, max_retries=0) as client:
                stream = await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True
                )
                chunks = [chunk async for chunk in stream]
            assert chunks[-1].choices[0].finish_reason == "content_filter"
            await upstream.requests[0].wait_disconnected(within=10.0)

            # Each worker serves its own metrics, behind the client key.
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
                for _ in range(4):
                    async with http.get(f"{root}/metrics") as response:
                        assert response.status == 401
                    async with http.get(
                        f"{root}/metrics", headers={"Authorization": f"Bearer {KEY}"}
                    ) as response:
                        assert response.status == 200, await response.text()
                        assert response.headers["Content-Type"].startswith("text/plain; version=")

            # A client that disconnects mid-stream cancels the upstream generation in the worker, while
            # the upstream sends nothing (no write to the client could have noticed it).
            upstream.enqueue(HANGS)
            reader, writer = await raw_request(
                root,
                chat_body(stream=True, messages=[{"role": "user", "content": "again"}]),
                headers={"Authorization": f"Bearer {KEY}"},
            )
            await reader.readuntil(b"Sentence 0 is here.")
            await close_writer(writer)
            record = upstream.requests[1]
            await record.wait_disconnected(within=10.0)
            assert record.completed_at is None


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [1, 2])
async def test_rxllm_serve_on_the_scripted_backend_answers_at_once(workers: int) -> None:
    """The command a new user runs first (``--workers 2`` hands the app to gunicorn, here with its log
    lines as JSON: each worker says it serves on uvloop, installed with the dev extra)."""
    port = free_port()
    log_format = ["--log-format", "json"] if workers > 1 else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine",
        "serve",
        "--backend",
        "scripted",
        "--forbid",
        "Celsius",
        "--port",
        str(port),
        "--workers",
        str(workers),
        *log_format,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    root = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(120), aiohttp.ClientSession() as http:
            while True:
                assert proc.returncode is None
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{root}/healthz") as response:
                        if response.status == 200:
                            break
                await asyncio.sleep(0.2)
        async with openai.AsyncOpenAI(base_url=f"{root}/v1", api_key="unused", max_retries=0) as client:
            stream = await client.chat.completions.create(
                model="scripted", messages=[{"role": "user", "content": "Starter tips?"}], stream=True
            )
            chunks = [chunk async for chunk in stream]
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)  # Ctrl-C
        _, raw = await asyncio.wait_for(proc.communicate(), 60)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text.startswith("A sourdough starter is a living culture") and "Celsius" not in text
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    stderr = raw.decode()
    assert f"on http://127.0.0.1:{port}/v1" in stderr and "Traceback" not in stderr, stderr
    if workers > 1:
        messages = [json.loads(line)["message"] for line in stderr.splitlines()]
        loops = [m.split(" serving on ")[1] for m in messages if " serving on " in m]
        assert loops == ["uvloop.Loop"] * workers, messages
