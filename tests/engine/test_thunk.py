"""The asyncio/Rx bridges, the replay log, and ModelOutputThunk's reading and cancelling rules."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from reactivex import Observable
from reactivex.subject import Subject

from backends import ScriptedBackend
from engine import (
    CBlock,
    GenerationCancelled,
    ModelOption,
    ModelOutputThunk,
    SimpleContext,
    wait_for_all_mots,
)
from engine.core.asyncrx import ReplayLog, from_async_iterable, iterate
from tests.doubles import OddBackend

STREAM = {ModelOption.STREAM: True}


class Source:
    """An async iterator whose cleanup is observable."""

    def __init__(self, items: list[str], *, pause: float = 0.0, error: Exception | None = None) -> None:
        self.items, self.pause, self.error = items, pause, error
        self.started = self.closed = False
        self.sent = 0

    async def run(self) -> AsyncIterator[str]:
        self.started = True
        try:
            for item in self.items:
                await asyncio.sleep(self.pause)
                self.sent += 1
                yield item
            if self.error is not None:
                raise self.error
        finally:
            self.closed = True


@pytest.mark.asyncio
async def test_from_async_iterable_pushes_items_then_completes() -> None:
    source = Source(["a", "b", "c"])
    got: list[str] = []
    done = asyncio.Event()
    from_async_iterable(source.run).subscribe(got.append, on_completed=done.set)
    await asyncio.wait_for(done.wait(), 5)
    assert got == ["a", "b", "c"] and source.closed


@pytest.mark.asyncio
async def test_from_async_iterable_is_cold_and_lazy() -> None:
    source = Source(["a"])
    observable = from_async_iterable(source.run)
    await asyncio.sleep(0)
    assert not source.started  # nothing runs until someone subscribes
    done = asyncio.Event()
    observable.subscribe(on_completed=done.set)
    await asyncio.wait_for(done.wait(), 5)
    assert source.started and source.closed


@pytest.mark.asyncio
async def test_from_async_iterable_reports_the_source_error_after_its_items() -> None:
    source = Source(["a"], error=ValueError("boom"))
    got: list[object] = []
    done = asyncio.Event()

    def on_error(exc: Exception) -> None:
        got.append(exc)
        done.set()

    from_async_iterable(source.run).subscribe(got.append, on_error)
    await asyncio.wait_for(done.wait(), 5)
    assert got[0] == "a" and isinstance(got[1], ValueError)


@pytest.mark.asyncio
async def test_disposal_cancels_the_reader_and_closes_the_source_within_one_loop_turn() -> None:
    source = Source(["x"] * 1000, pause=0.001)
    got: list[str] = []
    subscription = from_async_iterable(source.run).subscribe(got.append)
    while len(got) < 3:
        await asyncio.sleep(0.001)
    subscription.dispose()
    await asyncio.sleep(0)
    assert source.closed
    sent = source.sent
    await asyncio.sleep(0.02)
    assert source.sent == sent and len(got) < 1000


@pytest.mark.asyncio
async def test_disposal_from_inside_on_next_stops_reading_buffered_items() -> None:
    source = Source(["a", "b", "c", "d"])
    got: list[str] = []
    holder: dict[str, object] = {}

    def on_next(item: str) -> None:
        got.append(item)
        if item == "b":
            holder["sub"].dispose()  # type: ignore[attr-defined]

    holder["sub"] = from_async_iterable(source.run).subscribe(on_next)
    await asyncio.sleep(0.05)
    assert got == ["a", "b"] and source.closed


@pytest.mark.asyncio
async def test_iterate_yields_items_and_raises_errors_after_them() -> None:
    subject: Subject[int] = Subject()

    async def feed() -> None:
        await asyncio.sleep(0)
        subject.on_next(1)
        subject.on_next(2)
        subject.on_error(KeyError("k"))

    got: list[int] = []
    feeder = asyncio.create_task(feed())
    with pytest.raises(KeyError):
        async for item in iterate(subject):
            got.append(item)
    await feeder
    assert got == [1, 2]


@pytest.mark.asyncio
async def test_leaving_iterate_disposes_the_subscription() -> None:
    source = Source(["x"] * 100, pause=0.001)
    async with contextlib.aclosing(iterate(from_async_iterable(source.run))) as items:
        async for _ in items:
            break
    await asyncio.sleep(0)
    assert source.closed and source.sent < 100


def test_replay_log_replays_then_follows_live() -> None:
    log: ReplayLog[int] = ReplayLog()
    log.append(1)
    early: list[object] = []
    log.observable.subscribe(early.append, on_completed=lambda: early.append("end"))
    log.append(2)
    late: list[object] = []
    log.observable.subscribe(late.append, on_completed=lambda: late.append("end"))
    log.append(3)
    log.complete()
    log.append(4)  # ignored once finished
    after: list[object] = []
    log.observable.subscribe(after.append, on_completed=lambda: after.append("end"))
    assert early == late == after == [1, 2, 3, "end"]


# -- ModelOutputThunk ---------------------------------------------------------------


async def streaming_thunk(deltas: list[str], delay: float = 0.0, **kw: object) -> ModelOutputThunk[str]:
    backend = ScriptedBackend(deltas, delay=delay, **kw)  # type: ignore[arg-type]
    thunk, _ = await backend.generate_from_context(CBlock("q"), SimpleContext(), model_options=STREAM)
    return thunk


@pytest.mark.asyncio
async def test_the_seed_print_loop_prints_the_text_exactly_once() -> None:
    thunk = await streaming_thunk(["The ", "robot ", "cooks."], delay=0.001)
    assert not thunk.is_computed()
    printed: list[str] = []
    while not thunk.is_computed():
        printed.append(await thunk.astream())
    assert "".join(printed) == "The robot cooks." == thunk.value
    assert await thunk.astream() == ""  # drained


@pytest.mark.asyncio
async def test_astream_on_a_computed_thunk_returns_the_full_value_then_nothing() -> None:
    thunk: ModelOutputThunk[str] = ModelOutputThunk(value="done")
    assert thunk.is_computed()
    assert await thunk.astream() == "done"
    assert await thunk.astream() == ""


@pytest.mark.asyncio
async def test_astream_returns_only_new_content() -> None:
    thunk = await streaming_thunk(["a", "b", "c", "d"], delay=0.01)
    first = await thunk.astream()
    assert first and "abcd".startswith(first)
    rest = ""
    while not thunk.is_computed():
        rest += await thunk.astream()
    assert first + rest == "abcd"


@pytest.mark.asyncio
async def test_avalue_and_value() -> None:
    thunk = await streaming_thunk(["x", "y"])
    assert thunk.value is None
    assert await thunk.avalue() == "xy"
    assert thunk.value == "xy" and str(thunk) == "xy"


@pytest.mark.asyncio
async def test_late_subscribers_see_what_arrived_and_there_is_one_generation() -> None:
    backend = ScriptedBackend(["a", "b", "c"], delay=0.005)
    thunk, _ = await backend.generate_from_context(CBlock("q"), SimpleContext(), model_options=STREAM)
    await asyncio.sleep(0.012)
    seen: list[str] = []
    done = asyncio.Event()
    thunk.deltas.subscribe(seen.append, on_completed=done.set)
    await asyncio.wait_for(done.wait(), 5)
    assert seen == ["a", "b", "c"]
    assert len(backend.generations) == 1 and backend.generations[0].deltas_sent == 3


@pytest.mark.asyncio
async def test_cancel_generation_stops_the_source_and_keeps_what_arrived() -> None:
    backend = ScriptedBackend(["tok "] * 1000, delay=0.001)
    thunk, _ = await backend.generate_from_context(CBlock("q"), SimpleContext(), model_options=STREAM)
    while thunk.generation.deltas_received < 3:
        await asyncio.sleep(0.001)
    await thunk.cancel_generation()
    record = backend.generations[0]
    assert thunk.is_computed() and thunk.value is not None and thunk.value.startswith("tok tok tok ")
    assert record.cancel_requested_at is not None and record.cancelled_at is not None
    assert record.cancelled and record.deltas_sent < 1000
    sent = record.deltas_sent
    await asyncio.sleep(0.02)
    assert record.deltas_sent == sent
    await thunk.cancel_generation()  # idempotent


@pytest.mark.asyncio
async def test_a_backend_error_keeps_the_text_and_surfaces_from_avalue_and_astream() -> None:
    thunk = await streaming_thunk(["partial ", "text"], error=ConnectionError("dropped"))
    with pytest.raises(ConnectionError):
        await thunk.avalue()
    # A failed generation is not computed (as in Mellea); text and error stay readable.
    assert not thunk.is_computed() and thunk.value is None
    assert thunk.text == "partial text" and str(thunk) == "partial text"
    assert isinstance(thunk.error, ConnectionError)
    with pytest.raises(ConnectionError):
        await thunk.avalue()  # and every later call
    # astream hands over the text first, then raises.
    fresh = await streaming_thunk(["partial ", "text"], error=ConnectionError("dropped"))
    got = ""
    with pytest.raises(ConnectionError):
        while True:
            got += await fresh.astream()
    assert got == "partial text"


@pytest.mark.asyncio
async def test_non_streaming_generation_arrives_as_one_delta() -> None:
    backend = ScriptedBackend(["a", "b"])
    thunk, ctx = await backend.generate_from_context(CBlock("q"), SimpleContext())
    assert await thunk.avalue() == "ab"
    assert thunk.generation.deltas_received == 1
    assert ctx.as_list()[-1] is thunk and len(ctx) == 2


@pytest.mark.asyncio
async def test_wait_for_all_mots_resolves_concurrently() -> None:
    backends = [ScriptedBackend([f"t{i}"] * 5, delay=0.02) for i in range(3)]
    thunks = [
        (await b.generate_from_context(CBlock("q"), SimpleContext(), model_options=STREAM))[0]
        for b in backends
    ]
    assert not any(t.is_computed() for t in thunks)
    loop = asyncio.get_running_loop()
    start = loop.time()
    values = await wait_for_all_mots(thunks)
    elapsed = loop.time() - start
    assert values == ["t0" * 5, "t1" * 5, "t2" * 5]
    assert all(t.is_computed() for t in thunks)
    assert elapsed < 3 * 5 * 0.02  # concurrent: well under the sum of the three (generous bound)


def test_a_thunk_takes_a_source_or_a_value() -> None:
    with pytest.raises(TypeError):
        ModelOutputThunk()
    with pytest.raises(TypeError):
        ModelOutputThunk(Observable(), value="x")


def test_scripted_backend_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="list of delta strings"):
        ScriptedBackend("one string")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="delay"):
        ScriptedBackend(["a"], delay=-1)


@pytest.mark.asyncio
async def test_disposing_owned_deltas_cancels_the_generation_without_completing_the_subscriber() -> None:
    thunk = await streaming_thunk(["tok "] * 1000, delay=0.001)
    got: list[str] = []
    completed: list[bool] = []
    subscription = thunk.owned_deltas().subscribe(got.append, on_completed=lambda: completed.append(True))
    while len(got) < 3:
        await asyncio.sleep(0.001)
    subscription.dispose()
    assert thunk.is_computed() and thunk.generation.cancelled
    assert completed == []  # unsubscribed first: the cancel is not seen as a natural end
    await asyncio.sleep(0)
    assert thunk.generation.cancelled_at is not None


# -- failed and cancelled generations, non-text deltas -------------------------------


@pytest.mark.asyncio
async def test_the_seed_print_loop_ends_by_raising_the_backend_error() -> None:
    thunk = await streaming_thunk(["The ", "robot ", "burns."], delay=0.001, error=ConnectionError("dropped"))
    printed: list[str] = []
    with pytest.raises(ConnectionError, match="dropped"):
        while not thunk.is_computed():
            printed.append(await thunk.astream())
    assert "".join(printed) == "The robot burns."  # every delta before the error, once
    assert not thunk.is_computed()
    for _ in range(2):  # every later call raises it too
        with pytest.raises(ConnectionError):
            await thunk.astream()


@pytest.mark.asyncio
async def test_astream_hands_over_text_that_arrived_with_the_error_before_raising() -> None:
    thunk = await streaming_thunk(["a", "b", "c"], error=ConnectionError("dropped"))
    await asyncio.sleep(0.02)  # everything arrived, the error too, before the first read
    assert thunk.text == "abc" and isinstance(thunk.error, ConnectionError)
    assert await thunk.astream() == "abc"
    with pytest.raises(ConnectionError):
        await thunk.astream()


@pytest.mark.asyncio
async def test_a_cancelled_generation_is_computed_with_what_arrived() -> None:
    thunk = await streaming_thunk(["tok "] * 1000, delay=0.001)
    seen: list[object] = []
    thunk.deltas.subscribe(on_error=seen.append, on_completed=lambda: seen.append("completed"))
    while thunk.generation.deltas_received < 2:
        await asyncio.sleep(0.001)
    await thunk.cancel_generation(ValueError("enough"))
    assert thunk.is_computed() and thunk.error is None and thunk.value == thunk.text
    assert await thunk.avalue() == thunk.value
    # Other readers learn it was a cancel, not a natural end.
    assert len(seen) == 1 and isinstance(seen[0], GenerationCancelled)
    assert isinstance(seen[0].reason, ValueError)


@pytest.mark.asyncio
@pytest.mark.parametrize("bad", [5, b"bytes", None, {"text": "x"}], ids=["int", "bytes", "None", "dict"])
async def test_a_non_text_delta_fails_the_generation_with_a_clear_type_error(bad: object) -> None:
    backend = OddBackend(["ok ", bad, "never"])
    thunk, _ = await backend.generate_from_context(CBlock("q"), SimpleContext())
    with pytest.raises(TypeError, match=f"delta of type {type(bad).__name__}.*deltas must be str"):
        await asyncio.wait_for(thunk.avalue(), 5)
    assert not thunk.is_computed() and thunk.text == "ok " and isinstance(thunk.error, TypeError)
    assert "decode bytes" in str(thunk.error)
    await asyncio.sleep(0)
    assert backend.closed and backend.sent == 2  # the generation was stopped at the bad delta


@pytest.mark.asyncio
async def test_a_non_text_delta_from_a_synchronous_source_fails_at_once() -> None:
    import reactivex

    thunk: ModelOutputThunk[str] = ModelOutputThunk(reactivex.of(7))  # type: ignore[arg-type]
    assert thunk.error is not None and not thunk.is_computed()
    with pytest.raises(TypeError, match="type int"):
        await thunk.astream()


@pytest.mark.asyncio
async def test_wait_for_all_mots_raises_the_first_error_after_every_thunk_ended() -> None:
    failing = await streaming_thunk(["x"], error=ConnectionError("gone"))
    slow = await streaming_thunk(["y"] * 5, delay=0.01)
    with pytest.raises(ConnectionError):
        await wait_for_all_mots([slow, failing])
    assert slow.is_computed() and slow.value == "yyyyy"


def test_replay_log_isolates_a_raising_subscriber() -> None:
    hook: list[Exception] = []
    log: ReplayLog[int] = ReplayLog(on_observer_error=hook.append)
    good: list[object] = []
    bad_errors: list[Exception] = []

    def bad(item: int) -> None:
        if item == 2:
            raise KeyError("bad subscriber")

    log.observable.subscribe(bad, bad_errors.append)
    log.observable.subscribe(good.append, on_completed=lambda: good.append("end"))
    for i in (1, 2, 3):
        log.append(i)
    log.complete()
    assert good == [1, 2, 3, "end"]  # the others go on
    assert len(bad_errors) == 1 and isinstance(bad_errors[0], KeyError)  # its chain ends with its error
    assert hook == bad_errors  # and the owner hears of it


@pytest.mark.asyncio
async def test_an_exception_in_a_terminal_callback_does_not_vanish() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:

        def explode() -> None:
            raise LookupError("in on_completed")

        source = Source(["a"])
        done = asyncio.Event()
        from_async_iterable(source.run).subscribe(on_completed=explode)
        from_async_iterable(source.run).subscribe(on_completed=done.set)
        await asyncio.wait_for(done.wait(), 5)
        await asyncio.sleep(0.01)
    finally:
        loop.set_exception_handler(None)
    assert [type(c["exception"]) for c in reported] == [LookupError]
