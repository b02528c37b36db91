"""``@generative``: prompt from docstring and signature, the return type's schema sent, the
answer parsed into the return type (the parsing itself: tests/engine/test_typed_output.py)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from typing import Any, Literal

import attrs
import pytest

from backends.scripted import ScriptedBackend
from engine.core.components import Instruction
from engine.core.context import ChatContext, Context
from engine.core.thunk import ModelOutputThunk
from engine.core.typed_output import OutputParseError
from engine.genslots import (
    AsyncGenerativeFunction,
    GenerativeFunction,
    GenerativeOutputError,
    generative,
)
from engine.session import Session
from engine.session_start import start_session


@attrs.frozen
class Issue:
    main_complaint: str
    urgency: Literal["low", "medium", "high"]
    score: float = 0.0


@attrs.frozen
class Report:
    title: str
    issues: list[Issue]
    resolved: bool | None = None


@generative
def classify_sentiment(summary: str) -> Literal["positive", "negative", "mixed"]:
    """Classify the overall sentiment of the customer feedback summary."""


@generative
def count_items(text: str, kind: str = "fruit") -> int:
    """Count the items of the given kind mentioned in the text."""


@generative
def extract_issue(feedback: str) -> Issue:
    """Extract the main complaint and its urgency."""


@generative
async def is_question(text: str) -> bool:
    """Say whether the text is a question."""


class Recording(ScriptedBackend):
    def __init__(self, deltas: list[str]) -> None:
        super().__init__(deltas)
        self.actions: list[Any] = []
        self.formats: list[Any] = []
        self.threads: list[int] = []

    async def generate_from_context(self, action: Any, ctx: Context, **kwargs: Any) -> Any:
        self.actions.append(action)
        self.formats.append(kwargs.get("format"))
        self.threads.append(threading.get_ident())
        return await super().generate_from_context(action, ctx, **kwargs)


def session(answer: str) -> tuple[Session, Recording]:
    backend = Recording([answer])
    return Session(backend), backend


# -- decoration ---------------------------------------------------------------------------------


def test_decoration_keeps_the_function_identity() -> None:
    assert isinstance(classify_sentiment, GenerativeFunction)
    assert isinstance(is_question, AsyncGenerativeFunction)
    assert classify_sentiment.__name__ == "classify_sentiment"
    assert classify_sentiment.__doc__ == "Classify the overall sentiment of the customer feedback summary."
    assert classify_sentiment.return_type == Literal["positive", "negative", "mixed"]


def test_a_docstring_is_required() -> None:
    with pytest.raises(TypeError, match="needs a docstring"):

        @generative
        def nothing(x: str) -> str: ...


class Opaque:
    """Not an output type: pydantic cannot describe it."""


def test_return_types_that_are_no_output_type_are_rejected_at_decoration() -> None:
    with pytest.raises(TypeError, match=r"bad: format=Opaque is not an output type"):

        @generative
        def bad(x: str) -> Opaque:
            """Doc."""


def test_the_prompt_has_docstring_arguments_and_the_schema() -> None:
    prompt = count_items.prompt("apples, pears and a chair")
    assert prompt.startswith("Count the items of the given kind mentioned in the text.")
    assert "- text: apples, pears and a chair" in prompt
    assert "- kind: fruit" in prompt  # defaults are shown
    assert '"result":{"type":"integer"}' in prompt
    assert '"enum":["positive","negative","mixed"]' in classify_sentiment.prompt(summary="s")
    issue_prompt = extract_issue.prompt(feedback="f")
    assert '"main_complaint":{"title":"Main Complaint","type":"string"}' in issue_prompt
    with pytest.raises(TypeError, match="count_items"):
        count_items.prompt(nope=1)  # type: ignore[call-arg]


@generative
def echo(text: str) -> str:
    """Repeat the text."""


def test_every_return_type_but_str_is_sent_as_the_format() -> None:
    assert classify_sentiment.format == Literal["positive", "negative", "mixed"]
    assert extract_issue.format is Issue
    assert echo.format is None  # free text: nothing to constrain
    assert "Answer with the result text only." in echo.prompt("x")


# -- calls --------------------------------------------------------------------------------------


def test_sync_call_from_plain_code() -> None:
    m, backend = session('{"result": "mixed"}')
    assert classify_sentiment(m, summary="good and bad") == "mixed"
    assert isinstance(backend.actions[0], Instruction)
    assert "- summary: good and bad" in backend.actions[0].description
    assert backend.formats == [Literal["positive", "negative", "mixed"]]
    thunk = m.ctx.last_output()
    assert isinstance(thunk, ModelOutputThunk) and thunk.parsed_repr == "mixed"
    m.close()


@pytest.mark.asyncio
async def test_acall_and_async_functions() -> None:
    m, _ = session('{"main_complaint": "billing", "urgency": "high", "score": 9}')
    assert await extract_issue.acall(m, feedback="charged twice") == Issue("billing", "high", 9.0)
    m2, _ = session("Yes")
    coro = is_question(m2, text="Is it?")
    assert asyncio.iscoroutine(coro)
    assert await coro is True


@pytest.mark.asyncio
async def test_sync_call_inside_a_running_loop_runs_on_a_helper_thread() -> None:
    # Seed 001 calls classify_sentiment(m, ...) from inside a coroutine.
    m, backend = session("negative")
    before = len(m.ctx)
    assert classify_sentiment(m, summary="bad") == "negative"
    assert backend.threads[0] != threading.get_ident()
    assert len(m.ctx) == before + 2  # the session's context moved forward


@pytest.mark.asyncio
async def test_unparseable_answer_raises_from_the_call() -> None:
    m, _ = session("I cannot decide.")
    with pytest.raises(GenerativeOutputError, match=r"'I cannot decide\.'") as info:
        await classify_sentiment.acall(m, summary="s")
    assert str(info.value).startswith("classify_sentiment() returns Literal['positive', 'negative', 'mixed']")
    assert info.value.text == "I cannot decide." and info.value.function == "classify_sentiment"
    assert isinstance(info.value, OutputParseError)
    with pytest.raises(GenerativeOutputError):
        classify_sentiment(m, summary="s")
    with pytest.raises(GenerativeOutputError, match="Field required at urgency"):
        extract_issue.parse('{"main_complaint": "slow"}')


@pytest.mark.asyncio
async def test_model_options_pass_through_and_chat_context_sees_the_call() -> None:
    backend = Recording(["3"])
    m = Session(backend, ChatContext())
    assert await count_items.acall(m, "one two three", model_options={"num_ctx": 1}) == 3
    assert len(m.ctx) == 2


def test_generation_errors_propagate() -> None:
    m = start_session("scripted", deltas=["x"], error=RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        count_items(m, "x")
    m.close()


def test_forward_references_resolve_at_first_call() -> None:
    @generative
    def later(x: str) -> Later:
        """Make a Later."""

    m, _ = session('{"v": 1}')
    assert later(m, "x") == Later(1)
    m.close()


@attrs.frozen
class Later:
    v: int


# -- the schema on the wire ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_ollama_gets_the_return_types_schema_as_format() -> None:
    from backends.ollama import OllamaBackend
    from tests.fake_servers import FakeOllamaServer, Reply

    async with (
        FakeOllamaServer(Reply(deltas=['{"result": ', '"negative"}'])) as server,
        Session(OllamaBackend("m", base_url=server.url)) as m,
    ):
        assert await classify_sentiment.acall(m, summary="bad") == "negative"
    body = server.requests[0].body
    assert body["format"]["properties"]["result"]["enum"] == ["positive", "negative", "mixed"]


@pytest.mark.asyncio
async def test_openai_gets_the_return_types_schema_as_response_format() -> None:
    from backends.openai import OpenAIBackend
    from tests.fake_servers import FakeOpenAIServer, Reply

    answer = '{"main_complaint": "billing", "urgency": "high"}'
    async with FakeOpenAIServer(Reply(deltas=[answer])) as server:
        async with Session(OpenAIBackend("m", base_url=server.url)) as m:
            assert await extract_issue.acall(m, feedback="charged twice") == Issue("billing", "high")
        json_object = OpenAIBackend("m", base_url=server.url, response_format_type="json_object")
        async with Session(json_object) as m2:
            assert await extract_issue.acall(m2, feedback="again") == Issue("billing", "high")
    first, second = (r.body["response_format"] for r in server.requests)
    assert first["type"] == "json_schema" and first["json_schema"]["name"] == "Issue"
    assert first["json_schema"]["schema"]["required"] == ["main_complaint", "urgency"]
    assert second == {"type": "json_object", "schema": first["json_schema"]["schema"]}


def test_from_engine_import_generative_is_the_decorator_after_every_submodule_was_imported() -> None:
    # Python binds a submodule on its package when it is first imported: no submodule may
    # shadow the decorator `engine.generative` for later imports.
    code = (
        "import importlib, pkgutil, engine; "
        "[importlib.import_module(m.name) for m in pkgutil.walk_packages(engine.__path__, 'engine.')]; "
        "from engine import generative; "
        "assert callable(generative) and generative.__module__ == 'engine.genslots', generative; "
        "print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr
