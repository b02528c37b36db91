"""The suite runs on the loop it was asked for (``make unit-uvloop`` must not silently test asyncio's)."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import LOOP


@pytest.mark.asyncio
async def test_the_suite_runs_on_the_requested_loop() -> None:
    module = type(asyncio.get_running_loop()).__module__
    assert module.split(".")[0] == LOOP, f"asked for {LOOP}, running on {module}"


def test_asyncio_run_uses_the_requested_loop_too() -> None:
    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__.split(".")[0]

    assert asyncio.run(which()) == LOOP
