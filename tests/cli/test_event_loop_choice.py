"""The ``rxllm`` command runs on uvloop when it is installed; the library never picks a loop itself."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import subprocess
import sys
from typing import TextIO

import pytest

from engine.cli.loop import event_loop_factory
from tests.conftest import LOOP

# The module, not the package's `main` function of the same name.
cli_main = importlib.import_module("engine.cli.main")


DEMO_ARGS = ["demo", "--delay", "0", "--plain"]


def _loop_family(loop: asyncio.AbstractEventLoop) -> str:
    return type(loop).__module__.split(".")[0]


def test_the_command_runs_on_uvloop_when_it_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")  # the dev extra installs it (extra "speed")
    seen: list[str] = []

    async def record_loop(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
        seen.append(_loop_family(asyncio.get_running_loop()))
        return 0

    monkeypatch.setattr(cli_main, "demo_command", record_loop)
    assert cli_main.main(["demo"]) == 0
    assert seen == ["uvloop"]


def test_without_uvloop_the_command_runs_on_asyncios_default_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert event_loop_factory() is None
    seen: list[asyncio.AbstractEventLoop] = []

    async def record_loop(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
        seen.append(asyncio.get_running_loop())
        return 0

    monkeypatch.setattr(cli_main, "demo_command", record_loop)
    assert cli_main.main(["demo"]) == 0
    [loop] = seen
    # asyncio's default: the policy's loop (the suite's own, under RXLLM_TEST_LOOP=uvloop).
    assert _loop_family(loop) == LOOP


def test_importing_the_library_installs_no_loop_policy() -> None:
    probe = (
        "import asyncio, engine, engine.cli, engine.assembly, backends, operators\n"
        "print(type(asyncio.get_event_loop_policy()).__module__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.strip().split(".")[0] == "asyncio", out


def test_the_demo_runs_to_the_end_on_the_chosen_loop() -> None:
    # The real pipeline over the scripted backend, on the loop the command picks (uvloop here).
    proc = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-m", "engine", *DEMO_ARGS],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Task was destroyed" not in proc.stderr and "Traceback" not in proc.stderr
