"""Logging fits a library: loggers named after their modules, a NullHandler on each package's
logger, nothing at WARNING or above in a normal run, secrets never logged, and the debug
records (``rxllm stream --verbose``) tell of the request, retries and their reasons, the cancel
and the connection close."""

from __future__ import annotations

import importlib
import logging
import pkgutil
from typing import Any

import pytest

import backends
import engine
import operators
from backends import OpenAIBackend, ScriptedBackend
from engine import (
    Instruction,
    PartialValidationResult,
    Requirement,
    SimpleContext,
    ValidationResult,
    stream_with_chunking,
)
from engine.core.backend import Backend
from engine.core.context import Context
from engine.core.continuation import StreamRetry
from tests.fake_servers import FakeOpenAIServer, Reply

PACKAGES = (engine, operators, backends)


def _modules() -> list[str]:
    names: list[str] = []
    for package in PACKAGES:
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_a_module_logs_under_its_own_name(name: str) -> None:
    module = importlib.import_module(name)
    logger = getattr(module, "logger", None)
    if isinstance(logger, logging.Logger):
        assert logger.name == name


@pytest.mark.parametrize("package", [p.__name__ for p in PACKAGES])
def test_each_package_logger_has_a_null_handler(package: str) -> None:
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger(package).handlers)


class NoWord(Requirement):
    def __init__(self, word: str) -> None:
        super().__init__(f"no {word}")
        self.word = word

    async def stream_validate(self, chunk: str, *, backend: Backend, ctx: Context) -> PartialValidationResult:
        return PartialValidationResult("fail" if self.word in chunk else "pass", reason="said it")

    async def validate(self, backend: Backend, ctx: Context, **_: Any) -> ValidationResult:
        return ValidationResult(True)


@pytest.mark.asyncio
async def test_a_normal_run_logs_nothing_at_warning_or_above(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for word in ("zzz", "Two"):  # a run to its end, and one a check stops
        backend = ScriptedBackend(["One. ", "Two. ", "Three."])
        result = await stream_with_chunking(
            Instruction("count"), backend, SimpleContext(), requirements=[NoWord(word)]
        )
        await result.acomplete()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.asyncio
async def test_debug_records_tell_the_request_retry_cancel_and_close_and_never_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "sk-test-secret-key-0123456789"
    caplog.set_level(logging.DEBUG)
    busy = Reply(status=429, error="Too many requests")
    answer = Reply(deltas=["Fine. ", "BAD. ", "more ", "text."], delay=0.05)
    async with (
        FakeOpenAIServer() as server,
        OpenAIBackend("m", base_url=server.url, api_key=secret, retries=1, retry_backoff=0.01) as backend,
    ):
        # One run: a retried request, then a failing check cancels the generation.
        server.enqueue(busy, answer)
        result = await stream_with_chunking(
            Instruction("hi"), backend, SimpleContext(), requirements=[NoWord("BAD")]
        )
        await result.acomplete()
    messages = [r.getMessage() for r in caplog.records]
    assert all(secret not in m for m in messages)
    assert len([m for m in messages if m.startswith("POST ")]) == 1, messages
    assert any("429" in m and "Retrying" in m for m in messages), messages
    [cancel] = [m for m in messages if m.startswith("cancelled the generation")]
    assert "connection closed" in cancel
    assert "closed -" not in cancel  # closed after the cancel: not the refused attempt's close
    assert {r.name for r in caplog.records} <= {"backends._http", "engine.core.thunk"}


@pytest.mark.asyncio
async def test_an_in_stream_retry_is_logged_at_info_with_its_attempt_and_redacted_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "sk-live-0123456789abcdef"

    class Leaky(Requirement):
        """Fails the shouted chunk with a reason that quotes a credential."""

        async def stream_validate(
            self, chunk: str, *, backend: Backend, ctx: Context
        ) -> PartialValidationResult:
            if chunk.isupper():
                return PartialValidationResult("fail", reason=f"shouting (api_key={secret})")
            return PartialValidationResult("pass")

    caplog.set_level(logging.INFO)
    backend = ScriptedBackend(["One. ", "TWO. ", "Three."], continuations=[[" two. ", "Three."]])
    result = await stream_with_chunking(
        Instruction("count"),
        backend,
        SimpleContext(),
        requirements=[Leaky("calm")],
        retry=StreamRetry(max_attempts=3),
    )
    await result.acomplete()
    assert result.completed and result.attempts_used == 2
    [retry] = [r for r in caplog.records if r.name == "engine.attempts"]
    assert retry.levelno == logging.INFO
    message = retry.getMessage()
    assert message.startswith("retrying the stream (attempt 2 of 3): chunk 1 failed: "), message
    assert "shouting" in message and secret not in message and "***" in message
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
