"""Sampling: generate, validate, retry up to the budget; every attempt is recorded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from backends.scripted import ScriptedBackend
from engine.core.components import CBlock, Instruction
from engine.core.context import ChatContext, Context, SimpleContext
from engine.core.requirements import Requirement, ValidationResult
from engine.core.thunk import ModelOutputThunk
from engine.sampling import (
    RejectionSamplingStrategy,
    RepairTemplateStrategy,
    SamplingResult,
    SamplingStrategy,
    as_requirements,
)
from engine.session import Session


class SequenceBackend:
    """Answers the n-th generation with the n-th script (the last one repeats); judge
    questions (LLM-as-judge) are answered by *judge* and recorded separately."""

    def __init__(self, *scripts: str, judge: list[str] | None = None) -> None:
        self.scripts = list(scripts)
        self.judge_answers = list(judge or [])
        self.actions: list[Any] = []
        self.judged: list[str] = []

    async def generate_from_context(
        self,
        action: Any,
        ctx: Context,
        *,
        format: type | None = None,
        model_options: dict[str, Any] | None = None,
    ) -> tuple[ModelOutputThunk[str], Context]:
        text = action.format_for_llm()
        if text.startswith("Does the following output satisfy the requirement?"):
            self.judged.append(text)
            answer = self.judge_answers.pop(0)
            return await ScriptedBackend([answer]).generate_from_context(
                action, ctx, model_options=model_options
            )
        self.actions.append(action)
        script = self.scripts[min(len(self.actions), len(self.scripts)) - 1]
        return await ScriptedBackend([script]).generate_from_context(action, ctx, model_options=model_options)


def is_upper(text: str) -> bool:
    return text.isupper()


@pytest.mark.asyncio
async def test_success_on_the_first_try() -> None:
    backend = SequenceBackend("HELLO", "WORLD")
    m = Session(backend)
    result = await m.ainstruct(
        "Shout.", requirements=[Requirement("upper", is_upper)], return_sampling_results=True
    )
    assert isinstance(result, SamplingResult)
    assert result.success and result.result_index == 0
    assert len(result.attempts) == 1 and result.value == "HELLO"
    assert result.result.is_computed()
    assert len(backend.actions) == 1
    assert m.ctx.as_list()[-1] is result.result


@pytest.mark.asyncio
async def test_success_after_a_retry_records_both_attempts() -> None:
    backend = SequenceBackend("hello", "HELLO")
    m = Session(backend)
    req = Requirement("upper", is_upper)
    result = await m.ainstruct("Shout.", requirements=[req], return_sampling_results=True)
    assert result.success and result.result_index == 1 and result.value == "HELLO"
    assert [t.value for t in result.sample_generations] == ["hello", "HELLO"]
    assert [[v.as_bool() for _, v in vals] for vals in result.sample_validations] == [[False], [True]]
    assert result.attempts[0].failures == [(req, ValidationResult(False))]
    # Rejection sampling sends the same action again.
    assert result.sample_actions[0] == result.sample_actions[1]
    # The session keeps only the chosen attempt's context.
    assert m.ctx.as_list() == [result.sample_actions[1], result.result]


@pytest.mark.asyncio
async def test_ainstruct_with_requirements_returns_a_computed_thunk() -> None:
    m = Session(SequenceBackend("no", "YES"))
    thunk = await m.ainstruct("Shout.", requirements=[Requirement("upper", is_upper)])
    assert isinstance(thunk, ModelOutputThunk)
    assert thunk.is_computed() and thunk.value == "YES"


@pytest.mark.asyncio
async def test_budget_exhausted_returns_the_first_attempt_and_says_it_failed() -> None:
    backend = SequenceBackend("one", "two", "three")
    m = Session(backend)
    result = await m.ainstruct(
        "Shout.",
        requirements=[Requirement("upper", is_upper)],
        strategy=RejectionSamplingStrategy(loop_budget=3),
        return_sampling_results=True,
    )
    assert not result.success
    assert [t.value for t in result.sample_generations] == ["one", "two", "three"]
    assert result.result_index == 0 and result.value == "one"
    assert len(backend.actions) == 3
    # Default budget is 2.
    backend2 = SequenceBackend("a", "b", "c")
    thunk = await Session(backend2).ainstruct("Shout.", requirements=[Requirement("upper", is_upper)])
    assert len(backend2.actions) == 2 and thunk.value == "a"


@pytest.mark.asyncio
async def test_requirements_judged_by_the_model() -> None:
    backend = SequenceBackend("draft 1", "draft 2", judge=["No, it is not polite.", "Yes. Polite enough."])
    m = Session(backend)
    result = await m.ainstruct("Write politely.", requirements=["Be polite."], return_sampling_results=True)
    assert result.success and result.value == "draft 2"
    assert len(backend.judged) == 2
    assert "Requirement: Be polite." in backend.judged[0] and "draft 1" in backend.judged[0]
    first = result.attempts[0].validations[0][1]
    assert not first.as_bool() and first.reason == "No, it is not polite."


@pytest.mark.asyncio
async def test_a_separate_validation_backend_judges() -> None:
    generator = SequenceBackend("text")
    judge = SequenceBackend("unused", judge=["yes"])
    m = Session(generator, validation_backend=judge)  # type: ignore[arg-type]
    result = await m.ainstruct("Write.", requirements=["Any."], return_sampling_results=True)
    assert result.success
    assert generator.judged == [] and len(judge.judged) == 1


@pytest.mark.asyncio
async def test_requirements_mixing_functions_async_functions_and_the_model() -> None:
    async def long_enough(text: str) -> ValidationResult:
        await asyncio.sleep(0)
        return ValidationResult(len(text) > 3, reason=f"{len(text)} chars")

    backend = SequenceBackend("ok", "FINE TEXT", judge=["yes", "yes"])
    result = await Session(backend).ainstruct(
        "Write.",
        requirements=[Requirement("upper", is_upper), Requirement("long", long_enough), "sensible"],
        return_sampling_results=True,
    )
    assert result.success and result.value == "FINE TEXT"
    first = [v for _, v in result.attempts[0].validations]
    assert [v.as_bool() for v in first] == [False, False, True]
    assert first[1].reason == "2 chars"


@pytest.mark.asyncio
async def test_requirements_are_copied_per_attempt() -> None:
    class Counting(Requirement):
        def __init__(self) -> None:
            super().__init__("counting")
            self.seen = 0

        async def validate(self, backend: Any, ctx: Context, **kwargs: Any) -> ValidationResult:
            self.seen += 1
            return ValidationResult(self.seen == 2)  # would pass on the 2nd call if state leaked

    req = Counting()
    result = await Session(SequenceBackend("a", "b")).ainstruct(
        "x", requirements=[req], return_sampling_results=True
    )
    assert not result.success
    assert req.seen == 0


@pytest.mark.asyncio
async def test_repair_strategy_tells_the_model_what_failed_and_returns_the_last_attempt() -> None:
    backend = SequenceBackend("lower", "still lower")
    req = Requirement("The answer must be upper case.", is_upper)
    result = await Session(backend).ainstruct(
        "Shout.",
        requirements=[req],
        strategy=RepairTemplateStrategy(loop_budget=2),
        return_sampling_results=True,
    )
    assert not result.success and result.result_index == 1 and result.value == "still lower"
    first, second = backend.actions
    assert isinstance(second, Instruction)
    assert second.description.startswith("Shout.")
    assert "did not meet these requirements" in second.description
    assert "The answer must be upper case." in second.description
    assert "did not meet" not in first.description


def test_repair_strategy_leaves_non_instructions_alone() -> None:
    strategy = RepairTemplateStrategy()
    assert strategy.repair(CBlock("x"), None) == CBlock("x")  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_a_validator_that_raises_ends_the_run_with_its_error() -> None:
    def broken(text: str) -> bool:
        raise ZeroDivisionError("validator bug")

    with pytest.raises(ZeroDivisionError, match="validator bug"):
        await Session(SequenceBackend("a")).ainstruct("x", requirements=[Requirement("b", broken)])


@pytest.mark.asyncio
async def test_a_generation_error_ends_the_run() -> None:
    m = Session(ScriptedBackend(["part"], error=ConnectionResetError("gone")))
    with pytest.raises(ConnectionResetError, match="gone"):
        await m.ainstruct("x", requirements=[Requirement("any", lambda t: True)])
    assert len(m.ctx) == 0


@pytest.mark.asyncio
async def test_return_sampling_results_without_requirements_and_with_strategy_none() -> None:
    m = Session(SequenceBackend("x"))
    result = await m.ainstruct("x", return_sampling_results=True)
    assert result.success and len(result.attempts) == 1 and result.attempts[0].validations == ()
    with pytest.raises(ValueError, match="needs a sampling strategy"):
        await m.ainstruct("x", strategy=None, return_sampling_results=True)


@pytest.mark.asyncio
async def test_aact_samples_too() -> None:
    backend = SequenceBackend("no", "YES")
    thunk = await Session(backend).aact(CBlock("Shout."), requirements=[Requirement("upper", is_upper)])
    assert thunk.is_computed() and thunk.value == "YES"
    assert backend.actions == [CBlock("Shout."), CBlock("Shout.")]


@pytest.mark.asyncio
async def test_strategy_samples_directly_and_uses_its_own_requirements() -> None:
    strategy = RejectionSamplingStrategy(loop_budget=2, requirements=[Requirement("upper", is_upper)])
    result = await strategy.sample(
        Instruction("Shout."),
        context=ChatContext(),
        backend=SequenceBackend("x", "Y"),  # type: ignore[arg-type]
    )
    assert result.success and result.value == "Y"
    assert isinstance(result.result_ctx, ChatContext) and len(result.result_ctx) == 2


@pytest.mark.parametrize("budget", [0, -1, 1.5, True])
def test_loop_budget_must_be_a_positive_int(budget: Any) -> None:
    with pytest.raises(ValueError, match="loop_budget"):
        SamplingStrategy(loop_budget=budget)


def test_as_requirements() -> None:
    req = Requirement("a")
    assert as_requirements(None) == []
    assert as_requirements("b")[0].description == "b"
    assert as_requirements([req, "c"])[0] is req
    with pytest.raises(TypeError, match="Requirement objects or strings"):
        as_requirements([42])  # type: ignore[list-item]


@pytest.mark.asyncio
async def test_select_from_failure_out_of_range_is_an_error() -> None:
    class Bad(SamplingStrategy):
        def select_from_failure(self, attempts: Any) -> int:
            return 5

    with pytest.raises(IndexError, match="only 1 attempts"):
        await Bad(loop_budget=1).sample(
            CBlock("x"),
            context=SimpleContext(),
            backend=SequenceBackend("x"),  # type: ignore[arg-type]
            requirements=[Requirement("no", lambda t: False)],
        )
