"""One session across event loops, on the HTTP backends (one connection pool per loop, at the session level).

A session made by ``start_session`` is used by a sync twin (the session's private loop),
then by two ``asyncio.run`` calls, then by a sync twin called inside a running loop (a
helper thread's loop), then by the sync twin again, and by the manual's ``@generative``
example unchanged. Each scenario runs in a fresh interpreter (``python -X dev -W error``)
so interpreter shutdown is part of the test: "Unclosed client session", "Task was
destroyed", a ResourceWarning or a shutdown traceback would show on its stderr, which
must stay empty.
"""

from __future__ import annotations

import textwrap

import pytest

from tests.isolated import run_isolated

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, threading
    from typing import Literal
    from engine import generative, start_session
    from tests.fake_servers import FakeOllamaServer, FakeOpenAIServer, Reply

    KIND = sys.argv[1]
    ANSWER = '{"result": "mixed"}'
    server_loop = asyncio.new_event_loop()
    thread = threading.Thread(target=server_loop.run_forever, daemon=True)
    thread.start()
    Server = FakeOllamaServer if KIND == "ollama" else FakeOpenAIServer
    server = Server(Reply(deltas=[ANSWER[:7], ANSWER[7:]], delay=0.001))
    asyncio.run_coroutine_threadsafe(server.start(), server_loop).result(10)

    @generative
    def classify_sentiment(summary: str) -> Literal["positive", "negative", "mixed"]:
        \"\"\"Classify the overall sentiment of the customer feedback summary.\"\"\"

    m = start_session(KIND, "m", base_url=server.url)
    seen = []

    async def ask():
        return str(await m.ainstruct("Say it."))

    async def sync_inside_a_loop():
        return str(m.instruct("Say it."))  # blocks this loop; runs on a helper thread's loop

    seen.append(str(m.instruct("Say it.")))
    seen.append(asyncio.run(ask()))
    seen.append(asyncio.run(ask()))
    seen.append(asyncio.run(sync_inside_a_loop()))
    seen.append(str(m.instruct("Say it.")))
    seen.append(classify_sentiment(m, summary="Slow onboarding, great support."))
    seen.append(asyncio.run(classify_sentiment.acall(m, summary="Same again.")))
    assert seen == [ANSWER] * 5 + ["mixed", "mixed"], seen
    assert len(server.requests) == 7, len(server.requests)
    m.close()
    asyncio.run_coroutine_threadsafe(server.close(), server_loop).result(10)
    server_loop.call_soon_threadsafe(server_loop.stop)
    thread.join(10)
    server_loop.close()
    print("ok")
    """
)

NEVER_CLOSED = textwrap.dedent(
    """
    import asyncio, sys, threading
    from engine import start_session
    from tests.fake_servers import FakeOllamaServer, FakeOpenAIServer, Reply

    KIND = sys.argv[1]
    server_loop = asyncio.new_event_loop()
    thread = threading.Thread(target=server_loop.run_forever, daemon=True)
    thread.start()
    Server = FakeOllamaServer if KIND == "ollama" else FakeOpenAIServer
    server = Server(Reply(deltas=["Hel", "lo"], delay=0.001))
    asyncio.run_coroutine_threadsafe(server.start(), server_loop).result(10)

    # Seed code: a session started at module level, used by asyncio.run, never closed.
    m = start_session(KIND, "m", base_url=server.url)

    async def main():
        first = await m.ainstruct("Say hello.")
        lazy = await m.ainstruct("Say hello.", strategy=None)
        return str(first), await lazy.avalue()

    assert asyncio.run(main()) == ("Hello", "Hello")
    assert asyncio.run(main()) == ("Hello", "Hello")
    asyncio.run_coroutine_threadsafe(server.close(), server_loop).result(10)
    server_loop.call_soon_threadsafe(server_loop.stop)
    thread.join(10)
    server_loop.close()
    print("ok")
    """
)


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_one_session_serves_sync_twins_asyncio_runs_and_a_helper_threads_loop(kind: str) -> None:
    assert run_isolated(SCRIPT, kind) == "ok"


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_a_session_never_closed_across_two_asyncio_runs_shuts_down_clean(kind: str) -> None:
    assert run_isolated(NEVER_CLOSED, kind) == "ok"
