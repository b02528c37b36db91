"""``@generative``: prompt from docstring and signature, output parsed into the return type."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Literal

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.scripted import ScriptedBackend
from engine.core.components import Instruction
from engine.core.context import ChatContext, Context
from engine.core.thunk import ModelOutputThunk
from engine.genslot import (
    AsyncGenerativeFunction,
    GenerativeFunction,
    GenerativeOutputError,
    generative,
    parse_output,
)
from engine.session import Session, start_session


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
        self.threads: list[int] = []

    async def generate_from_context(self, action: Any, ctx: Context, **kwargs: Any) -> Any:
        self.actions.append(action)
        self.threads.append(threading.get_ident())
        return await super().generate_from_context(action, ctx, **kwargs)


def session(answer: str) -> tuple[Session, Recording]:
    backend = Recording([answer])
    return Session(backend), backend


# -- parsing each supported type ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tp", "expected"),
    [
        ("  hello world \n", str, "hello world"),
        ("```\nfenced\n```", str, "fenced"),
        ("true", bool, True),
        ("No.", bool, False),
        ("Yes, it is a question.", bool, True),
        ('"FALSE"', bool, False),
        ("42", int, 42),
        ("The answer is 7.", int, 7),
        ("1,234", int, 1234),
        ("-3", int, -3),
        ("3.5", float, 3.5),
        ("about 2e3 units", float, 2000.0),
        ("mixed", Literal["positive", "negative", "mixed"], "mixed"),
        ("Mixed.", Literal["positive", "negative", "mixed"], "mixed"),
        ("'negative'", Literal["positive", "negative", "mixed"], "negative"),
        ("The sentiment is positive overall.", Literal["positive", "negative", "mixed"], "positive"),
        ("2", Literal[1, 2, 3], 2),
        ('{"a": 1, "b": [2]}', dict, {"a": 1, "b": [2]}),
        ('Sure! ```json\n{"x": "1"}\n```', dict[str, int], {"x": 1}),
        ("Here you go: [1, 2, 3] done", list[int], [1, 2, 3]),
        ('{"main_complaint": "slow", "urgency": "high"}', Issue, Issue("slow", "high")),
        (
            '{"title": "T", "issues": [{"main_complaint": "c", "urgency": "low", "score": 1}], "extra": 0}',
            Report,
            Report("T", [Issue("c", "low", 1.0)]),
        ),
        ('{"title": "T", "issues": [], "resolved": null}', Report, Report("T", [], None)),
    ],
)
def test_parse_supported_types(text: str, tp: Any, expected: Any) -> None:
    assert parse_output(text, tp) == expected


@pytest.mark.parametrize(
    ("text", "tp", "detail"),
    [
        ("maybe", bool, "true/false"),
        ("none at all", int, "expected one number, found 0"),
        ("between 3 and 4", int, "found 2"),
        ("4.5", int, "not an integer"),
        ("lots", float, "expected one number"),
        ("neutral", Literal["positive", "negative", "mixed"], "expected one of"),
        ("positive and negative", Literal["positive", "negative", "mixed"], "mentions several"),
        ("not json", dict, "expected JSON"),
        ("[1, 2]", dict, "expected a JSON object"),
        ('{"main_complaint": "slow"}', Issue, "missing urgency"),
        ('{"main_complaint": "slow", "urgency": "urgent"}', Issue, "expected one of"),
        ('{"main_complaint": 3, "urgency": "low"}', Issue, "expected a string at main_complaint"),
        ('["a", "b"]', list[int], r"at \[0\]"),
    ],
)
def test_unparseable_output_is_an_error_that_quotes_it(text: str, tp: Any, detail: str) -> None:
    with pytest.raises(GenerativeOutputError, match=detail) as info:
        parse_output(text, tp, function="f")
    assert repr(text) in str(info.value)
    assert info.value.text == text and info.value.return_type == tp
    assert str(info.value).startswith("f() returns ")


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


def test_unsupported_return_types_are_rejected_at_decoration() -> None:
    with pytest.raises(TypeError, match=r"set.* is not supported"):

        @generative
        def bad(x: str) -> set[str]:
            """Doc."""


def test_the_prompt_has_docstring_arguments_and_answer_format() -> None:
    prompt = count_items.prompt("apples, pears and a chair")
    assert prompt.startswith("Count the items of the given kind mentioned in the text.")
    assert "- text: apples, pears and a chair" in prompt
    assert "- kind: fruit" in prompt  # defaults are shown
    assert "single integer" in prompt
    assert "exactly one of: positive, negative, mixed" in classify_sentiment.prompt(summary="s")
    issue_prompt = extract_issue.prompt(feedback="f")
    assert (
        '"main_complaint": string' in issue_prompt and '"urgency": "low" | "medium" | "high"' in issue_prompt
    )
    with pytest.raises(TypeError, match="count_items"):
        count_items.prompt(nope=1)  # type: ignore[call-arg]


# -- calls --------------------------------------------------------------------------------------


def test_sync_call_from_plain_code() -> None:
    m, backend = session("mixed")
    assert classify_sentiment(m, summary="good and bad") == "mixed"
    assert isinstance(backend.actions[0], Instruction)
    assert "- summary: good and bad" in backend.actions[0].description
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
    with pytest.raises(GenerativeOutputError, match=r"'I cannot decide\.'"):
        await classify_sentiment.acall(m, summary="s")
    with pytest.raises(GenerativeOutputError):
        classify_sentiment(m, summary="s")


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


# -- properties -----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=-(10**12), max_value=10**12), st.sampled_from(["{}", " {} ", "{}.", "Answer: {}"])
)
def test_integers_round_trip(n: int, template: str) -> None:
    assert parse_output(template.format(n), int) == n


@settings(max_examples=60, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False, width=64))
def test_floats_round_trip(x: float) -> None:
    assert parse_output(repr(x), float) == x


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.from_regex(r"[a-z]{3,8}", fullmatch=True), min_size=1, max_size=5, unique=True),
    st.data(),
)
def test_literal_options_round_trip_in_any_case(options: list[str], data: st.DataObject) -> None:
    choice = data.draw(st.sampled_from(options))
    tp = Literal[tuple(options)]  # type: ignore[valid-type]
    spelled = data.draw(
        st.sampled_from([choice, choice.upper(), choice.title(), f'"{choice}"', f"{choice}."])
    )
    assert parse_output(spelled, tp) == choice


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=40), st.text(min_size=1, max_size=5, alphabet="xyz"))
def test_unparseable_answers_are_quoted_verbatim(noise: str, word: str) -> None:
    text = f"{noise} {word}"
    try:
        parse_output(text, Literal["positive", "negative"])
    except GenerativeOutputError as exc:
        assert exc.text == text and repr(text) in str(exc)
