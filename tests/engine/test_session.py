"""Sessions: start_session, the async methods and their sync twins, contexts, the ChatContext warning."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
from typing import Any, Literal

import attrs
import pytest

from backends.registry import BACKENDS
from backends.scripted import ScriptedBackend
from engine.core.components import CBlock, Instruction, Message, Query, Transform, fill_user_variables
from engine.core.context import ChatContext, SimpleContext
from engine.core.options import ModelOption
from engine.core.requirements import Requirement, ValidationResult
from engine.session import CHAT_CONTEXT_WARNING, Session
from engine.session_start import start_session
from tests.doubles import CallRecordingBackend
from tests.fake_servers import FakeOllamaServer, FakeOpenAIServer, Reply
from tests.helpers import free_port

# -- start_session ------------------------------------------------------------------------


def test_start_session_scripted_defaults() -> None:
    m = start_session("scripted")
    assert isinstance(m, Session)
    assert isinstance(m.backend, ScriptedBackend)
    assert m.backend.deltas == list(BACKENDS["scripted"].defaults["deltas"])
    assert isinstance(m.ctx, SimpleContext)


def test_start_session_scripted_arguments() -> None:
    ctx = ChatContext()
    m = start_session(
        "scripted", "my-model", ctx=ctx, model_options={ModelOption.TEMPERATURE: 0}, deltas=["a"], delay=0.01
    )
    assert isinstance(m.backend, ScriptedBackend)
    assert (m.backend.deltas, m.backend.delay, m.backend.model_id) == (["a"], 0.01, "my-model")
    assert m.ctx is ctx
    assert m.model_options == {ModelOption.TEMPERATURE: 0}


def test_start_session_takes_melleas_parameters() -> None:
    ctx = ChatContext()
    assert start_session("scripted", "m", ctx).ctx is ctx  # ctx is Mellea's third positional
    assert isinstance(start_session("scripted", context_type="chat").ctx, ChatContext)
    assert isinstance(start_session("scripted", context_type="simple").ctx, SimpleContext)
    assert start_session("scripted", allow_context_type_change=True, plugins=[]).backend is not None
    with pytest.raises(ValueError, match="ctx= or context_type=, not both"):
        start_session("scripted", ctx=ctx, context_type="chat")
    with pytest.raises(
        ValueError, match="context_type must be one of 'simple', 'chat', or None; got 'graph'"
    ):
        start_session("scripted", context_type="graph")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no plugin system"):
        start_session("scripted", plugins=[object()])


def test_start_session_accepts_a_backend_object() -> None:
    backend = ScriptedBackend(["x"])
    assert start_session(backend).backend is backend


def test_start_session_unknown_backend_lists_the_names() -> None:
    with pytest.raises(ValueError, match=r"unknown backend 'watsonx'.*'ollama', 'openai', 'scripted'"):
        start_session("watsonx")


def test_start_session_openai_needs_a_model() -> None:
    with pytest.raises(ValueError, match="needs a model_id"):
        start_session("openai")


def test_start_session_ollama_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:5")
    m = start_session()
    assert type(m.backend).__name__ == "OllamaBackend"
    assert m.backend.base_url == "http://127.0.0.1:5"  # type: ignore[attr-defined]
    assert m.backend.model_id == "granite4.1:3b"  # type: ignore[attr-defined]


def test_engine_does_not_import_backends_at_module_level() -> None:
    code = (
        "import engine.session, engine.session_start, engine.genslots, engine.sampling, sys; "
        "print('backends' in sys.modules, 'pydantic' in sys.modules)"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False True"


@pytest.mark.asyncio
async def test_unreachable_ollama_fails_the_first_call_naming_url_and_alternatives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{port}")
    m = start_session()
    with pytest.raises(Exception, match=rf"http://127\.0\.0\.1:{port}") as info:
        await m.ainstruct("hello")
    message = str(info.value)
    assert "ollama serve" in message
    assert "start_session('scripted'" in message and "start_session('openai'" in message
    assert type(info.value).__name__ == "BackendUnreachableError"
    await m.aclose()


# -- user variables -------------------------------------------------------------------------


def test_fill_user_variables() -> None:
    assert fill_user_variables("Hi {{name}}, {{ name }}!", {"name": "Ada"}) == "Hi Ada, Ada!"
    assert fill_user_variables("{{n}} items", {"n": 3, "unused": 1}) == "3 items"
    assert fill_user_variables("literal {{x}}", None) == "literal {{x}}"


def test_missing_user_variable_names_it() -> None:
    with pytest.raises(KeyError, match=r"\{\{text\}\}"):
        fill_user_variables("Summarise {{text}} for {{who}}", {"who": "me"})


@pytest.mark.asyncio
async def test_ainstruct_fills_user_variables() -> None:
    backend = CallRecordingBackend(["ok"])
    m = Session(backend)
    thunk = await m.ainstruct("Summarise: {{text}}", user_variables={"text": "great product"})
    await thunk.avalue()
    action = backend.calls[0][0]
    assert isinstance(action, Instruction)
    assert action.description == "Summarise: great product"
    with pytest.raises(KeyError, match="text"):
        await m.ainstruct("Summarise: {{text}}", user_variables={})
    assert len(backend.calls) == 1  # nothing was generated for the failed call


# -- laziness ---------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("method", ["ainstruct", "aact", "aquery", "atransform"])
async def test_the_default_strategy_returns_a_computed_thunk(method: str) -> None:
    backend = ScriptedBackend(["a", "b", "c"], delay=0.01)
    m = Session(backend)
    args: tuple[Any, ...] = ("obj", "go") if method in ("aquery", "atransform") else ("go",)
    thunk = await getattr(m, method)(*args, model_options={ModelOption.STREAM: True})
    assert thunk.is_computed() and thunk.value == "abc"
    assert str(thunk) == "abc" and thunk.parsed_repr == "abc"  # a plain instruct parses to its text
    assert m.ctx.as_list()[-1] is thunk and len(backend.generations) == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("method", ["ainstruct", "aact", "aquery", "atransform"])
async def test_strategy_none_returns_the_lazy_thunk_and_await_result_a_computed_one(method: str) -> None:
    m = Session(ScriptedBackend(["a", "b", "c"], delay=0.01))
    args: tuple[Any, ...] = ("obj", "go") if method in ("aquery", "atransform") else ("go",)
    thunk = await getattr(m, method)(*args, strategy=None, model_options={ModelOption.STREAM: True})
    assert not thunk.is_computed()
    assert str(thunk) == "" and thunk.parsed_repr is None  # str() never blocks
    assert await thunk.avalue() == "abc"
    assert thunk.parsed_repr == "abc"  # set when the generation completed
    computed = await getattr(m, method)(*args, strategy=None, await_result=True)
    assert computed.is_computed() and computed.value == "abc" and computed.parsed_repr == "abc"


@pytest.mark.asyncio
async def test_strategy_none_is_lazy_even_with_requirements() -> None:
    calls: list[str] = []
    m = Session(ScriptedBackend(["text"], delay=0.01))
    req = Requirement("anything", validation_fn=lambda t: calls.append(t) is None)
    thunk = await m.ainstruct("go", requirements=[req], strategy=None)
    assert not thunk.is_computed()
    assert await thunk.avalue() == "text"
    assert calls == []  # strategy=None: requirements are rendered, never validated


@pytest.mark.asyncio
async def test_requirements_are_rendered_into_the_instruction() -> None:
    backend = CallRecordingBackend(["text"])
    m = Session(backend)
    await m.ainstruct("Write.", requirements=["Be brief.", Requirement("Be kind.", lambda t: True)])
    action = backend.calls[0][0]
    assert "Be brief." in action.format_for_llm() and "Be kind." in action.format_for_llm()


@pytest.mark.asyncio
async def test_session_model_options_are_merged_under_call_options() -> None:
    backend = CallRecordingBackend(["x"])
    m = Session(backend, model_options={ModelOption.TEMPERATURE: 0.5, ModelOption.SEED: 1})
    t = await m.ainstruct("go", model_options={ModelOption.SEED: 2})
    await t.avalue()
    assert backend.calls[0][2] == {ModelOption.TEMPERATURE: 0.5, ModelOption.SEED: 2}


# -- the other async methods ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_aact_generates_from_any_component() -> None:
    backend = CallRecordingBackend(["out"])
    m = Session(backend)
    thunk = await m.aact(CBlock("raw prompt"))
    assert await thunk.avalue() == "out"
    thunk2 = await m.aact("a string prompt")
    await thunk2.avalue()
    assert backend.calls[1][0] == CBlock("a string prompt")
    with pytest.raises(TypeError, match="format_for_llm"):
        await m.aact(42)


@pytest.mark.asyncio
async def test_achat_returns_the_assistant_message_and_keeps_both_turns() -> None:
    backend = CallRecordingBackend(["Hello", " there"])
    m = Session(backend, ChatContext())
    r1 = await m.achat("Hi!")
    assert isinstance(r1, Message)
    assert (r1.role, r1.content) == ("assistant", "Hello there")
    assert str(r1) == 'Message(role="assistant", content="Hello there")'  # as Mellea prints one
    # The generation's record is reachable from the reply; the thunk is in the context.
    assert r1.thunk is not None and r1.thunk.generation is backend.generations[0]
    assert r1.thunk.parsed_repr == r1 and r1.thunk.generation.deltas_received == 1  # not streamed
    turns = m.ctx.as_list()
    assert turns == [Message("user", "Hi!"), r1.thunk]
    r2 = await m.achat("More, {{who}}.", user_variables={"who": "please"})
    # The second request saw the first exchange in its context.
    sent_ctx = backend.calls[1][1]
    assert sent_ctx.view_for_generation() == [Message("user", "Hi!"), r1.thunk]
    assert backend.calls[1][0] == Message("user", "More, please.")
    assert m.ctx.as_list() == [Message("user", "Hi!"), r1.thunk, Message("user", "More, please."), r2.thunk]


@pytest.mark.asyncio
async def test_achat_failure_leaves_the_context_unchanged() -> None:
    m = Session(ScriptedBackend(["partial"], error=RuntimeError("server died")), ChatContext())
    with pytest.raises(RuntimeError, match="server died"):
        await m.achat("Hi")
    assert len(m.ctx) == 0


@pytest.mark.asyncio
async def test_avalidate_with_functions_and_with_the_model() -> None:
    backend = ScriptedBackend(["yes, it does"])
    m = Session(backend)
    short = Requirement("short", validation_fn=lambda t: len(t) < 10)
    results = await m.avalidate([short, "mentions cats"], output="tiny")
    assert [r.as_bool() for r in results] == [True, True]
    assert results[1].reason == "yes, it does"  # judged by the backend
    assert len(backend.generations) == 1  # only the LLM-as-judge requirement called the model
    results = await m.avalidate(short, output=CBlock("much too long for it"))
    assert results == [ValidationResult(False)]


@pytest.mark.asyncio
async def test_avalidate_defaults_to_the_last_output() -> None:
    m = Session(ScriptedBackend(["abc"]))
    with pytest.raises(ValueError, match="no model output"):
        await m.avalidate([Requirement("x", lambda t: True)])
    thunk = await m.ainstruct("go")
    results = await m.avalidate([Requirement("is abc", lambda t: t == "abc")])
    assert thunk.is_computed() and results[0].as_bool()
    out = await m.avalidate(Requirement("is abc", lambda t: t == "abc"), output=thunk)
    assert out[0].as_bool()


@pytest.mark.asyncio
async def test_aquery_and_atransform_send_the_object() -> None:
    backend = CallRecordingBackend(["answer"], delay=0.01)
    m = Session(backend)
    q = await m.aquery(CBlock("The sky is blue."), "What colour is the sky?")
    t = await m.atransform("Hello world", "Translate to French.")
    assert q.value == "answer" and t.value == "answer"
    query, transform = backend.calls[0][0], backend.calls[1][0]
    assert query == Query(CBlock("The sky is blue."), "What colour is the sky?")
    assert "The sky is blue." in query.format_for_llm() and "What colour" in query.format_for_llm()
    assert isinstance(transform, Transform)
    assert (
        "Hello world" in transform.format_for_llm() and "Translate to French." in transform.format_for_llm()
    )


# -- sync twins ----------------------------------------------------------------------------


def test_sync_twins_return_computed_results() -> None:
    with start_session("scripted", deltas=["o", "k"], delay=0.001) as m:
        r = m.instruct("go", model_options={ModelOption.STREAM: True})
        assert r.is_computed() and r.value == "ok"
        assert m.act(CBlock("x")).value == "ok"
        assert m.query("obj", "q?").value == "ok"
        assert m.transform("obj", "t").value == "ok"
        assert m.validate([Requirement("ok", lambda t: t == "ok")], output="ok")[0].as_bool()
        assert m.chat("hi") == Message("assistant", "ok")
        sampled = m.instruct("go", requirements=[Requirement("ok", lambda t: t == "ok")])
        assert sampled.is_computed() and sampled.value == "ok"
        result = m.instruct("go", return_sampling_results=True)
        assert result.success and result.value == "ok"


def test_sync_twins_warn_nothing_for_chat_context(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with start_session("scripted", ctx=ChatContext()) as m:
        m.chat("hi")
        m.instruct("go")
    assert CHAT_CONTEXT_WARNING not in caplog.text


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def test_run_keeps_one_private_loop_that_close_and_the_finalizer_close() -> None:
    m = start_session("scripted")
    loop = m.run(_running_loop())
    m.instruct("go")
    assert m.run(_running_loop()) is loop and not loop.is_closed()
    m.close()
    m.close()
    assert loop.is_closed()
    assert m.instruct("go").value  # a new private loop after a close
    m.close()
    m2 = start_session("scripted")
    loop2 = m2.run(_running_loop())
    del m2
    gc.collect()
    assert loop2.is_closed()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("instruct", ("go",)),
        ("chat", ("hi",)),
        ("act", (CBlock("x"),)),
        ("validate", (["r"], "output")),
        ("query", ("obj", "q")),
        ("transform", ("obj", "t")),
    ],
)
async def test_sync_twins_inside_a_running_loop_run_on_a_helper_thread(
    method: str, args: tuple[Any, ...]
) -> None:
    backend = CallRecordingBackend(["x"])
    threads: list[int] = []
    real = backend.generate_from_context

    async def record_thread(*a: Any, **kw: Any) -> Any:
        threads.append(threading.get_ident())
        return await real(*a, **kw)

    backend.generate_from_context = record_thread  # type: ignore[method-assign]
    m = Session(backend)
    result = m.validate(args[0], output=args[1]) if method == "validate" else getattr(m, method)(*args)
    assert result is not None
    assert threads and all(t != threading.get_ident() for t in threads)
    m.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("call", "what"),
    [
        (lambda m: m.ainstruct(""), r"ainstruct\(\) got an empty description"),
        (lambda m: m.ainstruct("{{x}}", user_variables={"x": "  "}), "empty description"),
        (lambda m: m.aact(""), r"aact\(\) got an empty action"),
        (lambda m: m.aact(CBlock(" \n")), "empty action"),
        (lambda m: m.achat(""), r"achat\(\) got an empty message"),
        (lambda m: m.aquery("doc", ""), r"aquery\(\) got an empty query"),
        (lambda m: m.atransform("doc", " "), r"atransform\(\) got an empty transformation"),
    ],
)
async def test_an_empty_prompt_is_a_value_error_before_any_request(call: Any, what: str) -> None:
    backend = ScriptedBackend(["x"])
    m = Session(backend)
    with pytest.raises(ValueError, match=what):
        await call(m)
    assert backend.generations == [] and len(m.ctx) == 0


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("instruct", ("",)),
        ("chat", ("",)),
        ("act", ("",)),
        ("query", ("doc", "")),
        ("transform", ("doc", "")),
    ],
)
def test_the_sync_twins_refuse_an_empty_prompt_too(method: str, args: tuple[Any, ...]) -> None:
    backend = ScriptedBackend(["x"])
    with Session(backend) as m, pytest.raises(ValueError, match=rf"{method}\(\) got an empty"):
        getattr(m, method)(*args)
    assert backend.generations == []


# -- the ChatContext warning --------------------------------------------------------------


@pytest.mark.asyncio
async def test_chat_context_warning_is_logged_once_per_session(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    m = Session(ScriptedBackend(["x"]), ChatContext())
    await asyncio.gather(m.achat("a"), m.achat("b"))
    await m.ainstruct("c")
    warnings = [r for r in caplog.records if r.getMessage() == CHAT_CONTEXT_WARNING]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert CHAT_CONTEXT_WARNING == (
        "Not using a SimpleContext with asynchronous requests could cause unexpected results "
        "due to stale contexts. Ensure you await between requests."
    )
    other = Session(ScriptedBackend(["x"]), ChatContext())
    await other.achat("again")
    assert len([r for r in caplog.records if r.getMessage() == CHAT_CONTEXT_WARNING]) == 2


@pytest.mark.asyncio
async def test_simple_context_never_warns(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    m = Session(ScriptedBackend(["x"]))
    thunks = [await m.ainstruct(f"q{i}") for i in range(3)]
    await asyncio.gather(*(t.avalue() for t in thunks))
    assert CHAT_CONTEXT_WARNING not in caplog.text


@pytest.mark.asyncio
async def test_contexts_are_immutable_and_the_session_moves_forward() -> None:
    m = Session(ScriptedBackend(["x"]))
    before = m.ctx
    t = await m.ainstruct("go")
    assert len(before) == 0 and len(m.ctx) == 2
    assert m.ctx.as_list()[1] is t
    await t.avalue()


def test_session_rejects_a_non_backend() -> None:
    with pytest.raises(TypeError, match="generate_from_context"):
        Session(object())  # type: ignore[arg-type]


# -- against a loopback Ollama-protocol server -----------------------------------------------


class ServerThread:
    """A FakeOllamaServer on its own event loop in a thread, so plain (sync) code can call it."""

    def __init__(self, reply: Reply) -> None:
        self.server = FakeOllamaServer(reply)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-ollama", daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_sync_twins_over_http_close_the_connection_pool() -> None:
    with ServerThread(Reply(deltas=["Hel", "lo"])) as st:
        with start_session("ollama", "test-model", base_url=st.server.url) as m:
            assert m.instruct("Say hello.").value == "Hello"
            assert m.chat("Hi") == Message("assistant", "Hello")
            pool = m.backend.session  # type: ignore[attr-defined]
        assert pool is not None and pool.closed
        assert [r.body["model"] for r in st.server.requests] == ["test-model", "test-model"]
        assert st.server.requests[0].body["messages"][-1]["content"].startswith("Say hello.")


def test_an_unclosed_sync_session_is_cleaned_up_when_collected() -> None:
    with ServerThread(Reply(deltas=["ok"])) as st:
        m = start_session("ollama", "test-model", base_url=st.server.url)
        assert m.query("doc", "q").value == "ok"
        pool = m.backend.session  # type: ignore[attr-defined]
        del m
        gc.collect()
        assert pool.closed  # and no "Unclosed client session" warning (warnings are errors here)


@pytest.mark.asyncio
async def test_async_with_closes_the_backend() -> None:
    async with FakeOllamaServer(Reply(deltas=["a", "b"])) as server:
        async with start_session("ollama", "m", base_url=server.url) as m:
            thunk = await m.ainstruct("go")
            assert await thunk.avalue() == "ab"
            pool = m.backend.session  # type: ignore[attr-defined]
        assert pool.closed


def test_a_session_started_in_asyncio_run_is_closed_at_shutdown(monkeypatch: pytest.MonkeyPatch) -> None:
    with ServerThread(Reply(deltas=["x"] * 50, delay=0.05)) as st:
        monkeypatch.setenv("OLLAMA_HOST", st.server.url)
        holder: list[Session] = []

        async def main() -> None:
            m = start_session()
            holder.append(m)
            thunk = await m.ainstruct(
                "never awaited", model_options={ModelOption.STREAM: True}, strategy=None
            )
            await thunk.astream()  # the first delta arrived: the request is in flight

        asyncio.run(main())
        pool = holder[0].backend.session  # type: ignore[attr-defined]
        assert pool is None or pool.closed
        # The in-flight generation was cancelled: the server saw the client leave.
        record = st.server.requests[0]
        asyncio.run_coroutine_threadsafe(record.wait_disconnected(5), st.loop).result(6)


def test_sync_generative_inside_a_loop_on_an_http_session() -> None:
    from engine.genslots import generative

    @generative
    def f(x: str) -> str:
        """Echo."""

    async def main(url: str) -> None:
        m = start_session("ollama", "m", base_url=url)
        assert await f.acall(m, "x") == "y"
        assert f(m, "x") == "y"  # blocks this loop, runs on a helper thread
        assert await f.acall(m, "x") == "y"
        assert len(m.ctx) == 6

    # The server runs on its own thread: the sync call blocks this test's loop.
    with ServerThread(Reply(deltas=["y"])) as st:
        asyncio.run(main(st.server.url))
        assert len(st.server.requests) == 3


@pytest.mark.asyncio
async def test_openai_session_streams_chats_and_samples() -> None:
    async with FakeOpenAIServer(Reply(deltas=["Bon", "jour"])) as server:
        m = start_session("openai", "gpt-test", base_url=server.url, api_key="sk-test", ctx=ChatContext())
        mot = await m.ainstruct("Greet me.", model_options={ModelOption.STREAM: True}, strategy=None)
        assert not mot.is_computed()
        streamed = ""
        while not mot.is_computed():
            streamed += await mot.astream()
        assert streamed == "Bonjour"
        reply = await m.achat("Again.")
        assert reply == Message("assistant", "Bonjour")
        result = await m.ainstruct(
            "Greet.",
            requirements=[Requirement("French", lambda t: t == "Bonjour")],
            return_sampling_results=True,
        )
        assert result.success
        bodies = [r.body for r in server.requests]
        assert [b["model"] for b in bodies] == ["gpt-test"] * 3
        assert server.requests[0].headers["Authorization"] == "Bearer sk-test"
        # ChatContext: the chat turn was sent with the earlier exchange.
        assert [msg["content"] for msg in bodies[1]["messages"]] == ["Greet me.", "Bonjour", "Again."]
        await m.aclose()


# -- typed output: format= ------------------------------------------------------------------


@attrs.frozen
class Verdict:
    label: Literal["spam", "ham"]
    confidence: float


@pytest.mark.asyncio
async def test_format_parses_the_answer_into_parsed_repr() -> None:
    backend = CallRecordingBackend(['{"label": "spam", "confidence": 0.9}'])
    m = Session(backend)
    thunk = await m.ainstruct("Classify: buy now!", format=Verdict)
    assert thunk.value == '{"label": "spam", "confidence": 0.9}'  # the text stays the JSON
    assert thunk.parsed_repr == Verdict("spam", 0.9)
    acted = await m.aact("Classify: hello", format=Verdict)
    assert acted.parsed_repr == Verdict("spam", 0.9)
    lazy = await m.ainstruct("again", format=Verdict, strategy=None)
    assert lazy.parsed_repr is None
    await lazy.avalue()
    assert lazy.parsed_repr == Verdict("spam", 0.9)  # parsed when the generation completed
    reply = await m.achat("Classify: win a prize", format=Verdict)
    assert reply.content == '{"label": "spam", "confidence": 0.9}'
    assert reply.thunk is not None and reply.thunk.parsed_repr == Verdict("spam", 0.9)


@pytest.mark.asyncio
async def test_an_answer_that_does_not_fit_the_format_raises_and_quotes_it() -> None:
    from engine.core.typed_output import OutputParseError

    m = Session(ScriptedBackend(["I would say maybe."]))
    with pytest.raises(OutputParseError, match=r"not a valid Literal\['yes', 'no'\].*'I would say maybe\.'"):
        await m.ainstruct("Yes or no?", format=Literal["yes", "no"])
    assert len(m.ctx) == 0  # the session did not move on to an answer it could not read


@pytest.mark.asyncio
async def test_a_format_that_is_no_output_type_fails_before_any_request() -> None:
    class Opaque:
        pass

    backend = ScriptedBackend(["x"])
    m = Session(backend)
    with pytest.raises(TypeError, match="is not an output type"):
        await m.ainstruct("go", format=Opaque)
    with pytest.raises(TypeError, match="is not an output type"):
        await m.achat("go", format=Opaque)
    assert backend.generations == []


# -- Mellea's model options ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_option_the_backend_cannot_honour_is_warned_about_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING)
    monkeypatch.setattr("engine.core.options._warned", set())
    async with FakeOllamaServer(Reply(deltas=["ok"])) as server:
        m = start_session(
            "ollama",
            "m",
            base_url=server.url,
            model_options={ModelOption.THINKING: True, ModelOption.CONTEXT_WINDOW: 4096},
        )
        for _ in range(2):
            await m.ainstruct("go", model_options={ModelOption.STOP_SEQUENCES: ["\n"]})
        await m.aclose()
    warnings = [r for r in caplog.records if "cannot honour" in r.getMessage()]
    assert [r.getMessage() for r in warnings] == [
        "OllamaBackend cannot honour model option ModelOption.THINKING; it is left out of the request"
    ]
    assert warnings[0].levelno == logging.WARNING
    options = server.requests[0].body["options"]
    assert options == {"num_ctx": 4096, "stop": ["\n"]}  # the ones it can honour are mapped
