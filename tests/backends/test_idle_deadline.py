"""The idle deadline: exact like ``asyncio.timeout`` rescheduled per frame, with one timer per idle period."""

from __future__ import annotations

import asyncio

import pytest

from backends._idle import IdleDeadline

# Loops fire timers up to their clock's resolution early (uvloop's clock counts milliseconds).
EARLY = 0.002

pytestmark = pytest.mark.asyncio


async def test_news_within_the_idle_time_keeps_the_wait_going_past_it() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with IdleDeadline(0.1) as deadline:
        deadline.arm()
        for _ in range(6):  # 0.3 s in all, never 0.1 s without news
            await asyncio.sleep(0.04)
            deadline.last = loop.time()
    assert not deadline.expired()
    assert loop.time() - started >= 0.24 - EARLY


async def test_silence_longer_than_the_idle_time_raises_timeout_error() -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        async with IdleDeadline(0.05) as deadline:
            deadline.arm()
            await asyncio.sleep(0.02)
            deadline.last = loop.time()
            stamped = deadline.last
            await asyncio.sleep(5)
    assert deadline.expired()
    assert loop.time() - stamped >= 0.05 - EARLY  # counted from the last news, not from arm()
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # its own cancel taken back


async def test_a_frame_costs_no_timer_handle_only_an_idle_period_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    armed: list[float] = []
    call_at = loop.call_at

    def counting_call_at(when: float, callback, *args):  # type: ignore[no-untyped-def]
        armed.append(when)
        return call_at(when, callback, *args)

    monkeypatch.setattr(loop, "call_at", counting_call_at)
    async with IdleDeadline(0.2) as deadline:
        deadline.arm()
        for _ in range(200):
            deadline.last = loop.time()
            await asyncio.sleep(0)
    assert len(armed) == 1


async def test_a_cancel_from_outside_stays_a_cancel() -> None:
    async def wait() -> None:
        async with IdleDeadline(10.0) as deadline:
            deadline.arm()
            await asyncio.sleep(5)

    task = asyncio.create_task(wait())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_disarmed_it_waits_forever_until_armed_again() -> None:
    loop = asyncio.get_running_loop()
    async with IdleDeadline(0.03) as deadline:
        deadline.arm()
        deadline.disarm()
        await asyncio.sleep(0.1)  # a back-off between retries: not silence
        assert not deadline.expired()
    with pytest.raises(TimeoutError):
        async with IdleDeadline(0.03) as deadline:
            deadline.arm()
            deadline.disarm()
            deadline.arm()
            started = loop.time()
            await asyncio.sleep(5)
    assert loop.time() - started >= 0.03 - EARLY


async def test_none_never_expires() -> None:
    async with IdleDeadline(None) as deadline:
        deadline.arm()
        await asyncio.sleep(0.05)
    assert not deadline.expired()
