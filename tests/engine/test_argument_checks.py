"""Every argument of every public entry point is refused at the call, before anything starts.

A wrong type is a ``TypeError``, a wrong value a ``ValueError``; the message names the
argument; the backend has started no generation; no task is left pending and nothing
hangs. The property tests feed each entry point arbitrary bad values for each argument;
the example tests pin the cases that used to hang, fail every check, or start a
generation nobody reads.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import math
import re
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends import ScriptedBackend
from engine import (
    ChatContext,
    ForbiddenWords,
    Instruction,
    MaxCharacters,
    MaxSentences,
    MaxWords,
    MustNotMatch,
    PartialValidationResult,
    Requirement,
    SimpleContext,
    StreamRetry,
    req,
    stream_with_chunking,
)
from engine.core import arguments
from engine.core.requirements import validate_all
from engine.session import Session
from engine.session_start import start_session
from engine.stream_handles import stream
from operators import SentenceChunking
from operators.final_validation import final_validation
from operators.validate import validate

BadValue = tuple[Any, type[Exception]]
"""A bad value and the exception it must raise."""


def _typed(values: st.SearchStrategy[Any]) -> st.SearchStrategy[BadValue]:
    return values.map(lambda v: (v, TypeError))


def _valued(values: st.SearchStrategy[Any]) -> st.SearchStrategy[BadValue]:
    return values.map(lambda v: (v, ValueError))


class _Opaque:
    """An object of no use to anyone: no methods, no number, no text."""

    def __repr__(self) -> str:
        return "_Opaque()"


_OBJECTS = st.sampled_from([_Opaque(), _Opaque, object, int])
_NOT_TEXT = st.one_of(
    st.integers(),
    st.floats(allow_nan=True),
    st.booleans(),
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
    _OBJECTS,
)
_NOT_NUMBER = st.one_of(
    st.text(max_size=4),
    st.booleans(),
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=2),
    st.complex_numbers(max_magnitude=10),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
    _OBJECTS,
)


def bad_seconds() -> st.SearchStrategy[BadValue]:
    """Not a duration (TypeError), or one that makes no sense (ValueError): NaN, infinite, <= 0."""
    return st.one_of(
        _typed(_NOT_NUMBER),
        _valued(
            st.one_of(
                st.sampled_from([math.nan, math.inf, -math.inf, 0, 0.0, -0.0, -1]),
                st.floats(max_value=0, allow_nan=False),
                st.integers(max_value=0),
            )
        ),
    )


def bad_flag() -> st.SearchStrategy[BadValue]:
    return _typed(st.one_of(st.integers(), st.text(max_size=3), st.none(), st.floats(), _OBJECTS))


def bad_text(*, optional: bool = False) -> st.SearchStrategy[BadValue]:
    values = _NOT_TEXT if optional else st.one_of(_NOT_TEXT, st.none())
    return _typed(values)


def bad_choice(allowed: tuple[str, ...], *, optional: bool = False) -> st.SearchStrategy[BadValue]:
    unknown = st.text(max_size=8).filter(lambda s: s not in allowed)
    wrong = _NOT_TEXT if optional else st.one_of(_NOT_TEXT, st.none())
    return st.one_of(_valued(unknown), _typed(wrong))


def bad_mapping() -> st.SearchStrategy[BadValue]:
    return _typed(
        st.one_of(
            st.text(max_size=3),
            st.integers(),
            st.lists(st.integers(), max_size=2),
            st.dictionaries(st.integers(), st.integers(), min_size=1, max_size=2),
            _OBJECTS,
        )
    )


def bad_whole_number(minimum: int) -> st.SearchStrategy[BadValue]:
    return st.one_of(
        _typed(st.one_of(st.floats(), st.text(max_size=3), st.booleans(), st.none(), _OBJECTS)),
        _valued(st.integers(max_value=minimum - 1)),
    )


def bad_object(*, optional: bool = False, text_ok: bool = False) -> st.SearchStrategy[BadValue]:
    """Something that is not the backend / context / policy / strategy the argument takes."""
    values: list[st.SearchStrategy[Any]] = [
        st.integers(),
        st.lists(st.integers(), max_size=2),
        st.floats(),
        _OBJECTS,
    ]
    if not text_ok:
        values.append(st.text(max_size=3))
    if not optional:
        values.append(st.none())
    return _typed(st.one_of(*values))


def bad_requirements() -> st.SearchStrategy[BadValue]:
    return _typed(
        st.one_of(
            st.integers(),
            st.dictionaries(st.text(max_size=2), st.text(max_size=2), min_size=1, max_size=1),
            st.lists(st.integers(), min_size=1, max_size=2),
            st.just([Requirement]),
        )
    )


def bad_format() -> st.SearchStrategy[BadValue]:
    # Neither text (pydantic reads "int" as a type's name) nor a type (int is an output type).
    no_types = st.sampled_from([_Opaque(), _Opaque])
    return _typed(st.one_of(st.integers(), st.floats(), st.lists(st.integers(), max_size=2), no_types))


CHUNKING_ALIASES = ("sentence", "word", "paragraph", "json")


def bad_chunking(*, optional: bool = False) -> st.SearchStrategy[BadValue]:
    """An unknown alias ("words") or something that is no chunking strategy."""
    return bad_choice(CHUNKING_ALIASES, optional=optional)


# -- the entry points ---------------------------------------------------------------------------


@attrs.frozen
class Entry:
    """A public call: *call(backend, judge, overrides)* makes it with valid arguments but *overrides*."""

    name: str
    call: Callable[[ScriptedBackend, ScriptedBackend, dict[str, Any]], Any]
    bad: dict[str, st.SearchStrategy[BadValue]]


ACTION = Instruction("Write two sentences.")
DELTAS = ["One. ", "Two."]


def _run_kwargs(
    backend: ScriptedBackend, judge: ScriptedBackend, overrides: dict[str, Any]
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "action": ACTION,
        "backend": backend,
        "ctx": SimpleContext(),
        "requirements": [Requirement("Be brief.", validation_fn=lambda text: True)],
        "validation_backend": judge,
        "validation_timeout": 5.0,
        "retry": StreamRetry(max_attempts=2),
    }
    kwargs.update(overrides)
    return kwargs


def _stream_with_chunking(
    backend: ScriptedBackend, judge: ScriptedBackend, o: dict[str, Any]
) -> Awaitable[Any]:
    kwargs = _run_kwargs(backend, judge, o)
    return stream_with_chunking(kwargs.pop("action"), kwargs.pop("backend"), kwargs.pop("ctx"), **kwargs)


def _stream(backend: ScriptedBackend, judge: ScriptedBackend, o: dict[str, Any]) -> Awaitable[Any]:
    kwargs = _run_kwargs(backend, judge, o)
    return stream(kwargs.pop("action"), kwargs.pop("backend"), kwargs.pop("ctx"), **kwargs)


def _with_setting(name: str, value: Any) -> Requirement:
    """A requirement whose setting *name* was changed after construction (or by a subclass)."""
    requirement = Requirement("Be brief.", validation_fn=lambda text: True)
    setattr(requirement, name, value)
    return requirement


def _requirement_setting(name: str) -> Callable[[ScriptedBackend, ScriptedBackend, dict[str, Any]], Any]:
    def call(backend: ScriptedBackend, judge: ScriptedBackend, o: dict[str, Any]) -> Awaitable[Any]:
        return _stream_with_chunking(backend, judge, {"requirements": [_with_setting(name, o[name])]})

    return call


_RUN_ARGUMENTS: dict[str, st.SearchStrategy[BadValue]] = {
    "action": bad_object(text_ok=True),
    "backend": bad_object(),
    "ctx": bad_object(),
    "requirements": bad_requirements(),
    "chunking": bad_chunking(),
    "validation_backend": bad_object(optional=True),
    "validation_timeout": bad_seconds(),
    "retry": bad_object(optional=True),
    "format": bad_format(),
}
if "model_options" in inspect.signature(stream_with_chunking).parameters:  # options for the backend
    _RUN_ARGUMENTS["model_options"] = bad_mapping()

_REQUIREMENT_SETTINGS: dict[str, st.SearchStrategy[BadValue]] = {
    "chunking": bad_chunking(optional=True),
    "concurrency": bad_whole_number(1),
    "timeout": bad_seconds(),
    "on_timeout": bad_choice(("fail", "unknown")),
    "on_error": bad_choice(("raise", "unknown")),
}


def _session(backend: ScriptedBackend, judge: ScriptedBackend) -> Session:
    return Session(backend, validation_backend=judge)


def _method(name: str, *args: Any) -> Callable[[ScriptedBackend, ScriptedBackend, dict[str, Any]], Any]:
    """Session.<name>(*args, **overrides); "@i" in the overrides replaces the positional args[i]."""

    def call(backend: ScriptedBackend, judge: ScriptedBackend, o: dict[str, Any]) -> Any:
        positional = [o.pop(f"@{i}", a) for i, a in enumerate(args)]
        session = _session(backend, judge)
        if name.startswith("a"):
            return getattr(session, name)(*positional, **o)
        with session:  # a sync twin runs on the session's private loop: closed here
            return getattr(session, name)(*positional, **o)

    return call


_GENERATING = {
    "strategy": bad_object(optional=True),
    "format": bad_format(),
    "model_options": bad_mapping(),
    "await_result": bad_flag(),
}
_SAMPLING = {**_GENERATING, "return_sampling_results": bad_flag()}
_SESSION_ARGUMENTS: dict[str, tuple[tuple[Any, ...], dict[str, st.SearchStrategy[BadValue]]]] = {
    "instruct": (
        ("Write.",),
        {
            "@0": bad_text(),
            "requirements": bad_requirements(),
            "user_variables": bad_mapping(),
            **_SAMPLING,
        },
    ),
    "act": (("Write.",), {"@0": bad_object(text_ok=True), "requirements": bad_requirements(), **_SAMPLING}),
    "chat": (
        ("Hello.", "user"),
        {
            "@0": bad_text(),
            "@1": bad_choice(("system", "user", "assistant", "tool")),
            "user_variables": bad_mapping(),
            "format": bad_format(),
            "model_options": bad_mapping(),
        },
    ),
    "validate": (
        (["Be brief."],),
        {
            "@0": bad_requirements(),
            "output": bad_object(optional=True, text_ok=True),
            "format": bad_format(),
            "model_options": bad_mapping(),
        },
    ),
    "query": (("an object", "What is it?"), {"@1": bad_text(), **_GENERATING}),
    "transform": (("an object", "Shorter."), {"@1": bad_text(), **_GENERATING}),
}
_PARAMETER_NAMES = {
    "instruct": ("description",),
    "act": ("action",),
    "chat": ("content", "role"),
    "validate": ("requirements",),
    "query": ("obj", "query"),
    "transform": ("obj", "transformation"),
}


def _argument_name(method: str, key: str) -> str:
    return _PARAMETER_NAMES[method][int(key[1:])] if key.startswith("@") else key


ASYNC_ENTRIES = [
    Entry("stream_with_chunking", _stream_with_chunking, _RUN_ARGUMENTS),
    Entry(
        "stream",
        _stream,
        {**_RUN_ARGUMENTS, "chunking": bad_chunking(optional=True), "as_events": bad_flag()},
    ),
    *(
        Entry(
            f"stream_with_chunking(requirements=[r]) with r.{name} set",
            _requirement_setting(name),
            {name: bad},
        )
        for name, bad in _REQUIREMENT_SETTINGS.items()
    ),
    *(
        Entry(f"Session.a{method}", _method(f"a{method}", *args), bad)
        for method, (args, bad) in _SESSION_ARGUMENTS.items()
    ),
]

SYNC_ENTRIES = [
    *(
        Entry(f"Session.{method}", _method(method, *args), bad)
        for method, (args, bad) in _SESSION_ARGUMENTS.items()
    ),
    Entry(
        "Requirement",
        lambda b, j, o: Requirement(o.pop("description", "x"), o.pop("validation_fn", None), **o),
        {
            "description": bad_text(optional=True),
            "validation_fn": _typed(st.one_of(st.integers(), st.text(max_size=3), st.lists(st.integers()))),
            # An unknown alias is refused by the run, which knows the chunking strategies.
            "chunking": _typed(
                st.one_of(st.integers(), st.floats(), st.lists(st.integers(), max_size=2), _OBJECTS)
            ),
            **{k: v for k, v in _REQUIREMENT_SETTINGS.items() if k != "chunking"},
        },
    ),
    Entry(
        "StreamRetry",
        lambda b, j, o: StreamRetry(**o),
        {"max_attempts": bad_whole_number(1), "repair": _typed(_NOT_TEXT)},
    ),
    *(
        Entry(cls.__name__, lambda b, j, o, cls=cls: cls(o["limit"]), {"limit": bad_whole_number(0)})
        for cls in (MaxSentences, MaxWords, MaxCharacters)
    ),
    Entry(
        "ForbiddenWords",
        lambda b, j, o: ForbiddenWords(o["words"]),
        {
            "words": st.one_of(
                _typed(st.one_of(st.integers(), st.text(min_size=1, max_size=3), st.none(), _OBJECTS)),
                _typed(st.lists(st.one_of(st.integers(), st.none(), st.binary()), min_size=1, max_size=2)),
                _valued(st.sampled_from([[], [""], ["  "], ()])),
            )
        },
    ),
    Entry(
        "MustNotMatch",
        lambda b, j, o: MustNotMatch(o.pop("pattern", "x"), **o),
        {
            "pattern": st.one_of(
                _typed(st.one_of(st.integers(), st.none(), _OBJECTS)), _valued(st.just("(unclosed"))
            ),
            "flags": bad_whole_number(0),
            "description": bad_text(optional=True),
        },
    ),
    Entry(
        "req",
        lambda b, j, o: req(o.pop("description", "x"), o.pop("fn", bool), **o),
        {
            "description": bad_text(),
            "fn": _typed(st.one_of(st.integers(), st.text(max_size=3), st.none())),
            "check_whole_output": bad_flag(),
        },
    ),
    Entry(
        "start_session",
        lambda b, j, o: start_session(o.pop("backend_name", "scripted"), **o),
        {
            "backend_name": st.one_of(
                bad_object(text_ok=True), _valued(st.sampled_from(["watsonx", "", "Scripted2"]))
            ),
            "model_id": bad_text(optional=True),
            "ctx": bad_object(optional=True),
            "context_type": bad_choice(("simple", "chat"), optional=True),
            "model_options": bad_mapping(),
            "plugins": st.one_of(
                _typed(st.one_of(st.integers(), st.text(min_size=1, max_size=3), _OBJECTS)),
                _valued(st.just(["a plugin"])),
            ),
            "allow_context_type_change": bad_flag(),
        },
    ),
    Entry(
        "Session",
        lambda b, j, o: Session(o.pop("backend", b), **o),
        {
            "backend": bad_object(),
            "ctx": bad_object(optional=True),
            "model_options": bad_mapping(),
            "validation_backend": bad_object(optional=True),
        },
    ),
]


def _draw_call(data: st.DataObject, entries: list[Entry]) -> tuple[Entry, str, Any, type[Exception]]:
    entry = data.draw(st.sampled_from(entries), label="entry point")
    key = data.draw(st.sampled_from(sorted(entry.bad)), label="argument")
    value, error = data.draw(entry.bad[key], label="bad value")
    return entry, key, value, error


def _name_of(entry: Entry, key: str) -> str:
    method = entry.name.removeprefix("Session.") if entry.name.startswith("Session.") else ""
    if method not in _PARAMETER_NAMES:
        method = method[1:]  # the async form: "ainstruct"
    if method in _PARAMETER_NAMES:
        return _argument_name(method, key)
    return key


def _check_refusal(exc: BaseException, entry: Entry, key: str, value: Any, error: type[Exception]) -> None:
    name = _name_of(entry, key)
    assert type(exc) is error, f"{entry.name}({name}={value!r}) raised {type(exc).__name__}: {exc}"
    assert name in str(exc), f"{entry.name}({name}={value!r}): the message does not name {name!r}: {exc}"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_every_async_entry_point_refuses_a_bad_argument_before_anything_starts(data: st.DataObject) -> None:
    entry, key, value, error = _draw_call(data, ASYNC_ENTRIES)

    async def attempt() -> None:
        backend, judge = ScriptedBackend(DELTAS), ScriptedBackend(["yes"])
        with pytest.raises(Exception) as raised:
            # Bounded: a bad argument that hangs the run fails the test instead of hanging it.
            await asyncio.wait_for(entry.call(backend, judge, {key: value}), timeout=10)
        _check_refusal(raised.value, entry, key, value, error)
        assert backend.generations == [] and judge.generations == [], "a refused call started a generation"
        await asyncio.sleep(0)
        pending = asyncio.all_tasks() - {asyncio.current_task()}
        assert not pending, f"a refused call left tasks behind: {pending}"

    asyncio.run(attempt())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_every_sync_entry_point_refuses_a_bad_argument(data: st.DataObject) -> None:
    entry, key, value, error = _draw_call(data, SYNC_ENTRIES)
    backend, judge = ScriptedBackend(DELTAS), ScriptedBackend(["yes"])
    with pytest.raises(Exception) as raised:
        made = entry.call(backend, judge, {key: value})
        if isinstance(made, Session):
            made.close()
    _check_refusal(raised.value, entry, key, value, error)
    assert backend.generations == [] and judge.generations == []


def test_every_argument_of_the_public_calls_is_covered() -> None:
    """The tables above list every parameter of the calls they test (a new one must be added)."""

    def parameters(fn: Callable[..., Any]) -> set[str]:
        skip = {"self", "kwargs", "backend_kwargs"}
        return {p for p in inspect.signature(fn).parameters if p not in skip}

    assert parameters(stream_with_chunking) == set(_RUN_ARGUMENTS)
    assert parameters(stream) == set(_RUN_ARGUMENTS) | {"as_events"}
    for method, (_args, bad) in _SESSION_ARGUMENTS.items():
        named = {_argument_name(method, key) for key in bad}
        for fn in (getattr(Session, method), getattr(Session, f"a{method}")):
            # obj (of query/transform) takes anything: it is shown to the model as its text.
            assert parameters(fn) - {"obj"} == named, (method, parameters(fn) - named)


# -- the cases that used to go wrong --------------------------------------------------------------


def _run(coro: Awaitable[Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout=10)

    return asyncio.run(bounded())


@pytest.mark.parametrize("run", [_stream_with_chunking, _stream], ids=["stream_with_chunking", "stream"])
@pytest.mark.parametrize(
    ("timeout", "error"),
    [
        (math.nan, ValueError),
        (0, ValueError),
        (-1, ValueError),
        ("2", TypeError),
        ([1], TypeError),
        (True, TypeError),
    ],
)
def test_a_validation_timeout_that_is_no_duration_is_refused_before_generating(
    run: Callable[..., Awaitable[Any]], timeout: Any, error: type[Exception]
) -> None:
    # NaN used to hang the run; 0 and -1 failed every suspending check ("timed out after -1 s");
    # "2" and [1] started a generation that ended in a bare "float + str" TypeError.
    backend = ScriptedBackend(DELTAS)
    with pytest.raises(error, match=r"validation_timeout must be a number of seconds > 0 \(finite\)"):
        _run(run(backend, ScriptedBackend(["yes"]), {"validation_timeout": timeout, "retry": None}))
    assert backend.generations == []


def test_a_requirement_timeout_that_is_no_number_names_timeout() -> None:
    with pytest.raises(TypeError, match=re.escape("Requirement timeout must be a number of seconds > 0")):
        Requirement("x", timeout="0.5")  # type: ignore[arg-type]


def test_an_unknown_requirement_chunking_alias_is_refused_before_generating() -> None:
    # It used to raise only once the generation had started, leaving it streaming unread.
    backend = ScriptedBackend(DELTAS)
    words = Requirement("No purple.", chunking="words")
    with pytest.raises(
        ValueError, match=r"Unknown chunking alias 'words' for requirements\[0\]\.chunking.*'word'"
    ):
        _run(stream_with_chunking(ACTION, backend, SimpleContext(), requirements=[words]))
    assert backend.generations == []


class _SlowCheck(Requirement):
    async def stream_validate(self, chunk: str, *, backend: Any, ctx: Any) -> PartialValidationResult:
        await asyncio.sleep(0)
        return PartialValidationResult("pass")


def test_a_deadline_that_cannot_be_computed_is_refused_and_leaves_no_coroutine_behind() -> None:
    # A timeout set after construction used to fail in loop.time() + timeout, after the
    # check's coroutine was created: "coroutine ... was never awaited".
    check = _SlowCheck("slow")
    check.timeout = "soon"  # type: ignore[assignment]
    backend = ScriptedBackend(DELTAS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(TypeError, match=r"requirements\[0\]\.timeout must be a number of seconds"):
            _run(stream_with_chunking(ACTION, backend, SimpleContext(), requirements=[check]))
        gc.collect()
    assert backend.generations == []
    assert not [w for w in caught if "never awaited" in str(w.message)]


@pytest.mark.parametrize("operator", [validate, final_validation])
def test_the_operators_refuse_a_timeout_when_composed(operator: Callable[..., Any]) -> None:
    with pytest.raises(TypeError, match="timeout must be a number of seconds"):
        operator([_SlowCheck("slow")], backend=None, ctx=SimpleContext(), timeout="1")
    with pytest.raises(ValueError, match="timeout must be a number of seconds"):
        operator([_SlowCheck("slow")], backend=None, ctx=SimpleContext(), timeout=math.nan)


def test_validate_all_refuses_a_bad_validation_timeout() -> None:
    with pytest.raises(ValueError, match="validation_timeout"):
        _run(
            validate_all(
                [Requirement("x", validation_fn=bool)],
                ScriptedBackend([]),
                SimpleContext(),
                validation_timeout=-1,
            )
        )


def test_the_sync_twins_check_await_result_too() -> None:
    backend = ScriptedBackend(DELTAS)
    with Session(backend) as session, pytest.raises(TypeError, match="await_result must be True or False"):
        session.instruct("Write.", await_result="yes")  # type: ignore[call-overload]
    assert backend.generations == []


def test_the_message_shows_the_value_and_what_is_allowed() -> None:
    with pytest.raises(TypeError) as raised:
        arguments.positive_seconds("validation_timeout", "2")
    assert str(raised.value) == (
        "validation_timeout must be a number of seconds > 0 (finite), or None for no deadline; got '2' (str)"
    )
    with pytest.raises(ValueError, match=r"must be one of 'simple', 'chat', or None; got 'graph' \(str\)"):
        start_session("scripted", context_type="graph")  # type: ignore[arg-type]


def test_good_values_still_pass() -> None:
    assert arguments.positive_seconds("t", 0.001) == 0.001
    assert arguments.positive_seconds("t", None) is None
    assert arguments.whole_number("n", 0, minimum=0) == 0
    Requirement(
        "x", chunking=SentenceChunking(), timeout=2, concurrency=3, on_timeout="unknown", on_error="unknown"
    )
    Requirement("x", chunking="word")
    StreamRetry(max_attempts=1, repair="{reason}")
    with start_session(
        "scripted", context_type="chat", plugins=[], allow_context_type_change=True
    ) as session:
        assert isinstance(session.ctx, ChatContext)
