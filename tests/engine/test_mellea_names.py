"""Mellea's names mean here what they mean in Mellea, so code written against its docs runs
with only its imports changed: ``MelleaSession``, the values of ``ModelOption``'s keys,
``async with`` on every backend, ``resolve_chunking_strategy(None)``, and the words of the
error for a backend that does not stream."""

from __future__ import annotations

from typing import Any

import pytest

import engine
from backends.ollama import OllamaBackend
from backends.openai import OpenAIBackend
from backends.scripted import ScriptedBackend
from engine import (
    MelleaSession,
    ModelOption,
    ModelOutputThunk,
    Session,
    SimpleContext,
    start_session,
    stream_with_chunking,
)
from engine import stream as stream_handle
from tests.fake_servers import FakeOllamaServer, FakeOpenAIServer, Reply

MELLEA_MODEL_OPTIONS = {
    "TOOLS": "@@@tools@@@",
    "TOOL_CHOICE": "tool_choice",
    "MAX_NEW_TOKENS": "@@@max_new_tokens@@@",
    "SYSTEM_PROMPT": "@@@system_prompt@@@",
    "TEMPERATURE": "temperature",
    "CONTEXT_WINDOW": "@@@context_window@@@",
    "THINKING": "@@@thinking@@@",
    "SEED": "@@@seed@@@",
    "STREAM": "@@@stream@@@",
    "STREAM_TIMEOUT": "@@@stream_timeout@@@",
    "STOP_SEQUENCES": "@@@stop_sequences@@@",
    "LOGITS": "@@@logits@@@",
    "RAW_LOGITS": "@@@raw_logits@@@",
}
"""``mellea.backends.model_options.ModelOption``: the same in Mellea 0.7.0 and 0.8.0."""


def test_mellea_session_is_the_session() -> None:
    assert MelleaSession is Session and "MelleaSession" in engine.__all__
    assert isinstance(start_session("scripted"), MelleaSession)


def test_every_model_option_has_melleas_value() -> None:
    ours = {name: value for name, value in vars(ModelOption).items() if name.isupper()}
    assert set(ours) <= set(MELLEA_MODEL_OPTIONS), "a key Mellea does not define: check its name there"
    assert ours == {name: MELLEA_MODEL_OPTIONS[name] for name in ours}
    assert ModelOption.name_of("temperature") == "ModelOption.TEMPERATURE"


def test_the_plain_name_and_the_model_option_are_one_key() -> None:
    assert ModelOption.merge({"temperature": 0.5}, {ModelOption.TEMPERATURE: 0}) == {"temperature": 0}
    assert ModelOption.merge({ModelOption.TEMPERATURE: 0.5}, {"temperature": 0}) == {"temperature": 0}


async def _body(kind: str, options: dict[str, Any], session_options: dict[str, Any] | None = None) -> Any:
    """The JSON body the fake server received for one generation with *options*."""
    server_class, backend_class = (
        (FakeOllamaServer, OllamaBackend) if kind == "ollama" else (FakeOpenAIServer, OpenAIBackend)
    )
    async with (
        server_class(Reply(deltas=["ok"])) as server,
        backend_class("m", base_url=server.url) as backend,
    ):
        session = Session(backend, model_options=session_options)
        thunk = await session.ainstruct("hi", model_options=options, strategy=None)
        assert await thunk.avalue() == "ok"
    return server.requests[-1].body


def _temperature(kind: str, body: dict[str, Any]) -> Any:
    return body["options"]["temperature"] if kind == "ollama" else body["temperature"]


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["ollama", "openai"])
async def test_either_spelling_of_temperature_reaches_the_server_the_same(kind: str) -> None:
    plain = await _body(kind, {"temperature": 0})
    named = await _body(kind, {ModelOption.TEMPERATURE: 0})
    assert plain == named and _temperature(kind, plain) == 0
    assert "@@@" not in repr(plain)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["ollama", "openai"])
@pytest.mark.parametrize(
    ("default", "call"),
    [("temperature", ModelOption.TEMPERATURE), (ModelOption.TEMPERATURE, "temperature")],
    ids=["plain-default", "option-default"],
)
async def test_a_calls_temperature_overrides_the_sessions_in_either_spelling(
    kind: str, default: str, call: str
) -> None:
    body = await _body(kind, {call: 0.1}, session_options={default: 0.9})
    assert _temperature(kind, body) == 0.1


@pytest.mark.asyncio
async def test_the_scripted_backend_is_an_async_context_manager_like_the_http_ones() -> None:
    async with ScriptedBackend(["a", "b"]) as backend:
        assert isinstance(backend, ScriptedBackend)
        thunk, _ = await backend.generate_from_context("x", SimpleContext())
        assert await thunk.avalue() == "ab"
    await backend.aclose()  # idempotent, like HttpBackend.aclose
    async with MelleaSession(backend) as session:  # the session closes it again: still fine
        assert await (await session.ainstruct("x", strategy=None)).avalue() == "ab"


class _Eager:
    """A backend that ignores ``ModelOption.STREAM``: its thunk is computed when returned."""

    async def generate_from_context(
        self, action: Any, ctx: Any, *, format: Any = None, model_options: Any = None
    ) -> Any:
        thunk: ModelOutputThunk[str] = ModelOutputThunk(value="all at once")
        return thunk, ctx.add(action).add(thunk)


@pytest.mark.asyncio
async def test_a_computed_thunk_is_refused_in_melleas_words_too() -> None:
    for start in (stream_with_chunking, stream_handle):
        with pytest.raises(RuntimeError, match="already-computed MOT") as info:
            await start("x", _Eager(), SimpleContext())  # type: ignore[operator]
        assert "does not honour ModelOption.STREAM" in str(info.value)
