"""Bad input at the API: a clear error naming the problem and the fix, before any request is sent."""

from __future__ import annotations

from typing import Any

import pytest

from backends import ScriptedBackend
from engine import (
    Instruction,
    PartialValidationResult,
    Requirement,
    SimpleContext,
    ValidationResult,
    stream_with_chunking,
)
from engine.core.requirements import as_requirements
from engine.session import Session
from operators import ChunkingStrategy
from operators.chunking import Chunker

ACTION = Instruction("Write two sentences.")


class MaxSentences(Requirement):
    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        return PartialValidationResult("pass")


class SyncStreamValidate(Requirement):
    def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:  # type: ignore[override]
        return PartialValidationResult("pass")


class SyncValidate(Requirement):
    def validate(self, backend: Any, ctx: Any, **kw: Any) -> ValidationResult:  # type: ignore[override]
        return ValidationResult(True)


# -- requirements -------------------------------------------------------------------------------


def _with_validation_fn(req: Requirement, fn: Any) -> Requirement:
    req.validation_fn = fn
    return req


BAD_REQUIREMENTS: dict[str, tuple[Any, str]] = {
    "a class, not an instance": ([MaxSentences], r"the class MaxSentences, not an instance.*MaxSentences\("),
    "a lone class": (MaxSentences, r"the class MaxSentences, not an instance"),
    "a plain def stream_validate": (
        [SyncStreamValidate()],
        r"SyncStreamValidate.*stream_validate is a plain def.*async def stream_validate",
    ),
    "a plain def validate": ([SyncValidate()], r"validate is a plain def.*async def validate"),
    # Requirement() refuses it itself; set afterwards, the run still refuses it.
    "a non-callable validation_fn": (
        [_with_validation_fn(Requirement("x"), 3)],
        r"validation_fn=3.*not callable",
    ),
    "a number in the list": ([42], r"int 42.*Requirement\(description, validation_fn=...\)"),
    "a mapping": ({"be": "nice"}, r"requirements must be a list.*dict"),
    "bytes": (b"be nice", r"requirements must be a list.*bytes"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUIREMENTS))
def test_as_requirements_names_the_requirement_the_problem_and_the_fix(case: str) -> None:
    value, message = BAD_REQUIREMENTS[case]
    with pytest.raises(TypeError, match=message):
        as_requirements(value)


def test_a_single_string_is_one_requirement_never_one_per_character() -> None:
    (req,) = as_requirements("Be concise.")
    assert req.description == "Be concise."
    assert [r.description for r in as_requirements(("a", "b"))] == ["a", "b"]
    req = MaxSentences()
    assert as_requirements(req) == [req]


@pytest.mark.asyncio
@pytest.mark.parametrize("case", sorted(BAD_REQUIREMENTS))
async def test_stream_with_chunking_refuses_bad_requirements_before_any_request(case: str) -> None:
    value, message = BAD_REQUIREMENTS[case]
    backend = ScriptedBackend(["One. ", "Two."])
    with pytest.raises(TypeError, match=message):
        await stream_with_chunking(ACTION, backend, SimpleContext(), requirements=value)
    assert backend.generations == []


@pytest.mark.asyncio
async def test_stream_with_chunking_takes_a_single_string_as_one_requirement() -> None:
    backend = ScriptedBackend(["One. ", "Two."])
    result = await stream_with_chunking(
        ACTION,
        backend,
        SimpleContext(),
        requirements="Be concise.",  # type: ignore[arg-type]
        validation_backend=ScriptedBackend(["yes"]),
    )
    await result.acomplete()
    assert len(result.final_validations) == 1  # one requirement, not one per character


@pytest.mark.asyncio
@pytest.mark.parametrize("case", ["a class, not an instance", "a plain def stream_validate"])
async def test_session_methods_refuse_bad_requirements_before_any_request(case: str) -> None:
    value, message = BAD_REQUIREMENTS[case]
    backend = ScriptedBackend(["One. ", "Two."])
    m = Session(backend)
    with pytest.raises(TypeError, match=message):
        await m.ainstruct("Write two sentences.", requirements=value)
    assert backend.generations == []


# -- chunking strategies -------------------------------------------------------------------------


class Returns(ChunkingStrategy):
    def __init__(self, split: Any = None, flush: Any = None) -> None:
        self._split, self._flush = split, flush

    def split(self, accumulated_text: str) -> list[str]:
        return self._split  # type: ignore[no-any-return]

    def flush(self, accumulated_text: str) -> list[str]:
        return self._flush if self._flush is not None else [accumulated_text]  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return "Returns()"


@pytest.mark.parametrize(
    ("split", "shown"),
    [
        (None, "None (NoneType)"),
        ("abc", "'abc' (str)"),
        (["a", 3], "3 (int inside the list)"),
        (7, "7 (int)"),
    ],
)
def test_a_strategy_that_returns_a_non_list_of_str_is_a_type_error_naming_it(split: Any, shown: str) -> None:
    with pytest.raises(
        TypeError, match=r"Returns\(\)\.split\(\) returned " + shown.replace("(", r"\(").replace(")", r"\)")
    ):
        Chunker(Returns(split=split)).feed("abc")
    with pytest.raises(TypeError, match=r"Returns\(\)\.flush\(\) returned None"):
        Chunker(_FlushNone()).flush()


class _FlushNone(ChunkingStrategy):
    def split(self, accumulated_text: str) -> list[str]:
        return []

    def flush(self, accumulated_text: str) -> list[str]:
        return None  # type: ignore[return-value]

    def __repr__(self) -> str:
        return "Returns()"


def test_a_tuple_of_str_is_accepted() -> None:
    chunks = Chunker(Returns(split=("ab",))).feed("abc")
    assert [c.text for c in chunks] == ["ab"]


@pytest.mark.asyncio
async def test_a_broken_strategy_fails_the_run_instead_of_succeeding_with_no_chunks() -> None:
    result = await stream_with_chunking(
        ACTION, ScriptedBackend(["One. ", "Two."]), SimpleContext(), chunking=Returns()
    )
    with pytest.raises(TypeError, match="split"):
        await result.acomplete()
    assert not result.completed
