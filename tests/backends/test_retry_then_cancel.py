"""A generation whose request was retried (a refused status, then a stream) must still close its
stream's connection when it is cancelled: the close of the refused response before the retry is
not the close of the response that streams. Over real loopback sockets, both HTTP backends."""

from __future__ import annotations

import pytest

from backends import OllamaBackend, OpenAIBackend
from engine import ModelOption, SimpleContext
from tests.fake_servers import FakeOllamaServer, FakeOpenAIServer, FakeServer, Reply
from tests.isolated import run_isolated

KINDS = ["ollama", "openai"]


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("status", [429, 503])
async def test_a_cancel_after_a_retried_status_closes_the_streaming_response(kind: str, status: int) -> None:
    server: FakeServer = FakeOllamaServer() if kind == "ollama" else FakeOpenAIServer()
    backend_type = OllamaBackend if kind == "ollama" else OpenAIBackend
    async with server, backend_type("m", base_url=server.url, retries=1, retry_backoff=0.01) as backend:
        server.enqueue(Reply(status=status, error="busy"), Reply(deltas=["a"] * 500, delay=0.005))
        thunk, _ = await backend.generate_from_context(
            "Say hello.", SimpleContext(), model_options={ModelOption.STREAM: True}
        )
        streaming = await server.wait_request(2)
        await streaming.wait_frames(3)
        thunk.cancel()
        await streaming.wait_disconnected(within=2.0)  # sanity bound; the close is in cancel()
        generation = thunk.generation
        assert generation.extra["retries"] == 1 and generation.extra["http_status"] == 200
        assert generation.cancel_requested_at is not None and generation.connection_closed_at is not None
        assert generation.cancel_requested_at <= generation.connection_closed_at
        assert streaming.completed_at is None and streaming.frames_written < 500


RETRY_THEN_FAILING_CHECK = """
import asyncio, gc, logging
from backends import OpenAIBackend
from engine import Instruction, PartialValidationResult, Requirement, SimpleContext, stream_with_chunking
from tests.fake_servers import FakeOpenAIServer, Reply

class NoBad(Requirement):
    async def stream_validate(self, chunk, *, backend, ctx):
        return PartialValidationResult("fail" if "BAD" in chunk else "pass")

async def main():
    async with FakeOpenAIServer() as server, OpenAIBackend(
        "m", base_url=server.url, retries=1, retry_backoff=0.01
    ) as backend:
        server.enqueue(Reply(status=429, error="busy"), Reply(deltas=["Fine. ", "BAD. ", "more ", "text."], delay=0.05))
        result = await stream_with_chunking(Instruction("hi"), backend, SimpleContext(), requirements=[NoBad("x")])
        await result.acomplete()
        return result.completed, result.mot.generation.extra["retries"]

class Keep(logging.Handler):  # a handler attached, as when the leak was first seen
    def emit(self, record):
        kept.append(record.getMessage())

kept = []
logging.getLogger().addHandler(Keep())
logging.getLogger().setLevel(logging.DEBUG)
completed, retries = asyncio.run(main())
gc.collect()
print(completed, retries, any("Retrying" in m for m in kept))
"""


def test_a_run_retried_then_stopped_by_a_failing_check_leaves_nothing_unclosed() -> None:
    # -X dev -W error in a fresh interpreter: an unclosed response or connection is a
    # ResourceWarning on stderr, which must stay empty.
    out = run_isolated(RETRY_THEN_FAILING_CHECK)
    assert out == "False 1 True"
