"""One HTTP backend across event loops: a pooled session per loop, closed when its loop shuts down.

The scenarios run in a fresh interpreter (``python -X dev -W error``) so that interpreter
shutdown is part of the test: any "Unclosed client session", "Unclosed connector",
"Task was destroyed", ResourceWarning or shutdown traceback shows up on its stderr,
which must stay empty.
"""

from __future__ import annotations

import textwrap

import pytest

from tests.isolated import run_isolated

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, threading
    from backends import OllamaBackend, OpenAIBackend
    from engine import ModelOption, SimpleContext
    from tests.fake_servers import FakeOllamaServer, FakeOpenAIServer, Reply

    KIND = sys.argv[1]
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = (FakeOllamaServer if KIND == "ollama" else FakeOpenAIServer)(Reply(deltas=["Hel", "lo"], delay=0.01))
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    Backend = OllamaBackend if KIND == "ollama" else OpenAIBackend
    backend = Backend("m", base_url=server.url)
    pools = []

    async def generate(stream=True):
        thunk, _ = await backend.generate_from_context(
            "Say hello.", SimpleContext(), model_options={ModelOption.STREAM: stream}
        )
        text = await thunk.avalue()
        pools.append(backend.session)
        return text

    async def left_running():
        # A generation still streaming when asyncio.run shuts the loop down.
        thunk, _ = await backend.generate_from_context(
            "Say hello.", SimpleContext(), model_options={ModelOption.STREAM: True}
        )
        await thunk.astream()
        pools.append(backend.session)

    # A sync twin's loop (an asyncio.Runner), then asyncio.run twice, then the Runner again.
    with asyncio.Runner() as runner:
        assert runner.run(generate()) == "Hello"
        assert asyncio.run(generate(False)) == "Hello"
        assert asyncio.run(generate()) == "Hello"
        asyncio.run(left_running())
        assert runner.run(generate()) == "Hello"
    assert len({id(p) for p in pools}) == 4, pools  # one session per loop; the Runner's reused
    assert pools[0] is pools[4]
    assert all(p.closed for p in pools), [p.closed for p in pools]
    assert backend._pools == {}, backend._pools
    asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()
    print("ok", len(server.requests))
    """
)


@pytest.mark.parametrize("kind", ["ollama", "openai"])
def test_one_backend_serves_a_runner_and_several_asyncio_runs_and_shuts_down_clean(kind: str) -> None:
    assert run_isolated(SCRIPT, kind) == "ok 5"
