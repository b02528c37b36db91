"""What ``rxllm`` says, as a class: one bound and one message per numeric flag, whatever the bad
value; an error before any output told in one line and its hint, with no summary of nothing;
"interrupted" said once; each failure reason said once in the summary; API keys cleaned where
they enter; the demo's last words runnable as shown; no import cycle among the CLI's modules.

Subprocess runs go through the helpers of ``tests/cli/test_commands.py`` (the child runs with ``-X dev -W
error::ResourceWarning`` and must leave nothing that looks like a leak on stderr).
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import io
import math
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from backends.errors import BackendUnreachableError
from backends.openai import OpenAIBackend
from engine.checks import req
from engine.cli import (
    DEMO_ANSWER,
    EXIT_BACKEND_ERROR,
    EXIT_CHECK_FAILED,
    EXIT_INTERRUPTED,
    EXIT_MODEL_MISSING,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    JsonView,
    LiveView,
    RunStats,
    main,
    run_once,
    tokenize,
)
from engine.cli.args import Number, build_parser
from engine.cli.event_lines import EventLinesView
from engine.cli.plain import PlainTextView
from engine.cli.view import View
from engine.core.requirements import Requirement
from tests.cli.test_commands import ENV, PYTHON, ROOT, TEXT, Ran, _checked, arxllm, rxllm
from tests.fake_servers import FakeOllamaServer, FakeOpenAIServer, Reply
from tests.helpers import free_port, sigint_as_in_a_terminal

# -- numeric flags: one bound, one message ---------------------------------------------------------

NUMERIC_METAVARS = {"N", "T", "SECONDS"}


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(commands.choices)


def _numeric_flags() -> list[tuple[str, str]]:
    """``(command, flag)`` for every flag that takes a number (by its metavar or its type)."""
    return [
        (name, action.option_strings[-1])
        for name, command in _commands().items()
        for action in command._actions
        if action.option_strings
        and (
            action.metavar in NUMERIC_METAVARS
            or isinstance(action.type, Number)
            or action.type in (int, float)
        )
    ]


def _parse_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str | None:
    """The last line of the usage error *argv* gets from the parser, or None when it parses."""
    try:
        build_parser().parse_args(argv)
    except SystemExit as exit:
        assert exit.code == EXIT_USAGE
        return capsys.readouterr().err.strip().splitlines()[-1]
    return None


def _argv(command: str, flag: str, value: str) -> list[str]:
    return [command, *(["x"] if command == "stream" else []), f"{flag}={value}"]


def test_the_numeric_flags_are_found() -> None:
    flags = {flag for _, flag in _numeric_flags()}
    assert {"--timeout", "--max-tokens", "--retries", "--validation-timeout", "--delay", "--seed"} <= flags


def test_a_whole_number_flag_takes_any_size() -> None:
    huge = "1" + "0" * 400  # past what a float holds
    assert Number(whole=True, minimum=0)(huge) == int(huge)
    with pytest.raises(argparse.ArgumentTypeError, match="expected a number >= 0, got '1e400'"):
        Number(minimum=0)("1e400")


EXPECTED = re.compile(r"(a whole number|a number)(?: of \w+)?(?: (>=|>) (-?\d+(?:\.\d+)?))?")


@pytest.mark.parametrize(("command", "flag"), _numeric_flags())
def test_a_numeric_flag_states_one_bound_for_every_bad_value_and_applies_it(
    command: str, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    values = ["many", "", "nan", "inf", "-inf", "1e999", "-5", "-1", "-0.5", "0", "0.5", "1", "1.5", "7"]
    expected = set()
    refused = set()
    for value in values:
        message = _parse_error(_argv(command, flag, value), capsys)
        if message is None:
            continue
        refused.add(value)
        said = re.fullmatch(rf".*argument {flag}: expected (.+), got (.+)", message)
        assert said is not None, message
        assert said.group(2) == repr(value), message  # the value as given, quoted, every time
        expected.add(said.group(1))
    assert {"many", "", "nan", "inf"} <= refused
    # One statement of what the flag takes, whatever the bad value...
    assert len(expected) == 1, expected
    (what,) = expected
    stated = EXPECTED.fullmatch(what)
    assert stated is not None, what
    whole, above, bound = stated.group(1) == "a whole number", stated.group(2) == ">", stated.group(3)
    # ...and it is the rule applied: a value is refused exactly when it breaks the stated rule.
    for value in values:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        meets = math.isfinite(number) and (not whole or ("." not in value and number.is_integer()))
        if bound is not None:
            meets = meets and (number > float(bound) if above else number >= float(bound))
        assert (value not in refused) == meets, (value, what)


# -- an error before any output: one line and its hint ---------------------------------------------


def _one_line_and_its_hint(ran: Ran, kind: str | None) -> None:
    lines = ran.err.splitlines()
    assert 1 <= len(lines) <= 2, ran.err
    assert lines[0].startswith("rxllm: "), ran.err
    assert all(line.startswith("hint: ") for line in lines[1:]), ran.err
    if kind is not None:
        assert ran.err.count(kind) == 1, ran.err  # the class name once


SERVERS: dict[str, tuple[Any, list[str]]] = {
    "ollama": (FakeOllamaServer, []),
    "openai": (FakeOpenAIServer, ["--backend", "openai", "--model", "m"]),
}

BEFORE_OUTPUT = [
    # (name, server, reply or None for a closed port, extra flags, exit code, error class)
    ("unreachable ollama", "ollama", None, [], EXIT_UNREACHABLE, "BackendUnreachableError"),
    ("unreachable openai", "openai", None, [], EXIT_UNREACHABLE, "BackendUnreachableError"),
    ("model missing", "ollama", Reply(status=404, error='model "m" not found'), [], EXIT_MODEL_MISSING, "ModelNotFoundError"),
    ("key refused", "openai", Reply(status=401, error="Incorrect API key"), [], EXIT_BACKEND_ERROR, "AuthenticationError"),
    ("bad request", "ollama", Reply(status=400, error="bad options"), [], EXIT_BACKEND_ERROR, None),
    (
        "timeout before the first chunk",
        "ollama",
        Reply(deltas=tokenize(TEXT), delay=5),
        ["--timeout", "0.2"],
        EXIT_BACKEND_ERROR,
        None,
    ),
]  # fmt: skip


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["--plain", "--events", "--json"])
@pytest.mark.parametrize(
    ("server", "reply", "flags", "code", "kind"),
    [case[1:] for case in BEFORE_OUTPUT],
    ids=[case[0] for case in BEFORE_OUTPUT],
)
async def test_an_error_before_any_output_is_one_line_and_its_hint(
    server: str, reply: Reply | None, flags: list[str], code: int, kind: str | None, mode: str
) -> None:
    server_class, backend_flags = SERVERS[server]
    if reply is None:
        url = f"http://127.0.0.1:{free_port()}" + ("/v1" if server == "openai" else "")
        ran = await arxllm("stream", "x", "--base-url", url, *backend_flags, *flags, mode)
    else:
        async with server_class(reply) as fake:
            ran = await arxllm("stream", "x", "--base-url", fake.url, *backend_flags, *flags, mode)
    assert ran.code == code, ran.err
    _one_line_and_its_hint(ran, kind)
    if mode == "--plain":
        assert ran.out == ""
    elif mode == "--json":  # the event stream still ends the usual way
        assert [e["type"] for e in ran.events()] == ["ErrorEvent", "CompletedEvent"]
    else:  # the events as they came, and no summary of nothing after them
        assert [line.split()[1] for line in ran.out.splitlines()] == ["error:", "completed:"]


def test_a_key_with_a_control_character_inside_is_one_line_naming_where_it_came_from() -> None:
    args = ["stream", "x", "--backend", "openai", "--model", "m", "--base-url", "http://127.0.0.1:9/v1"]
    env = dict(ENV, OPENAI_API_KEY="sk-one\nsk-two\n")
    proc = subprocess.run([*PYTHON, *args], capture_output=True, env=env, cwd=ROOT, timeout=120, check=False)
    ran = _checked(proc.returncode, proc.stdout, proc.stderr)
    assert ran.code == EXIT_USAGE
    assert ran.err == (
        "rxllm: the API key from $OPENAI_API_KEY has a control character ('\\n') at position 6: "
        "give the key alone, on one line\n"
    )
    ran = rxllm(*args, "--api-key", "sk-one\x07")
    assert ran.code == EXIT_USAGE
    assert "argument --api-key: the API key from --api-key has a control character ('\\x07')" in ran.err
    assert ran.err.count("error:") == 1


class _Unreachable:
    """A backend whose server is never there."""

    async def generate_from_context(self, action: Any, ctx: Any, **_: Any) -> Any:
        raise BackendUnreachableError("Cannot reach the server at http://127.0.0.1:9 (refused).")


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["plain", "events", "json", "live"])
async def test_no_view_prints_a_summary_of_nothing(kind: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    views: dict[str, View] = {
        "plain": PlainTextView(out, err),
        "events": EventLinesView(out),
        "json": JsonView(out),
        "live": LiveView(Console(file=out, force_terminal=True, width=100)),
    }
    stats = await run_once("x", _Unreachable(), [], "sentence", views[kind], title="t")  # type: ignore[arg-type]
    assert stats.before_output and stats.exit_code == EXIT_UNREACHABLE
    printed = out.getvalue() + err.getvalue()
    for summary in ("chunks delivered", "total time", "summary"):
        assert summary not in printed


# -- interrupted, said once ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["--plain", "--events", "--json"])
def test_ctrl_c_says_interrupted_once(mode: str) -> None:
    proc = subprocess.Popen(
        [*PYTHON, "stream", "x", "--backend", "scripted", "--delay", "0.05", mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
        cwd=ROOT,
        preexec_fn=sigint_as_in_a_terminal,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline() if mode != "--plain" else os.read(proc.stdout.fileno(), 12)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    ran = _checked(proc.returncode, first + out, err)
    assert ran.code == EXIT_INTERRUPTED
    assert (ran.out + ran.err).count("interrupted") == 1, ran.out + ran.err
    assert ran.err.rstrip().endswith("rxllm: interrupted")


# -- each reason once in the summary ----------------------------------------------------------------


def test_retries_of_one_failure_tell_its_reason_once(tmp_path: Path) -> None:
    script = tmp_path / "answer.txt"
    script.write_text(TEXT, encoding="utf-8")
    ran = rxllm(
        "stream", "x", "--backend", "scripted", "--script", str(script), "--delay", "0",
        "--forbid", "silt", "--retries", "3",
    )  # fmt: skip
    assert ran.code == EXIT_CHECK_FAILED
    assert ran.err.count("forbidden word 'silt'") == 1, ran.err
    assert "-- failed quick checks: 4 (" in ran.err
    assert "-- retries: 3\n" in ran.err


@given(
    failures=st.lists(st.integers(0, 4), max_size=12),
    final=st.lists(st.integers(5, 7), max_size=6),
    retries=st.lists(st.integers(0, 4), max_size=6),
)
def test_the_summary_says_each_reason_once(failures: list[int], final: list[int], retries: list[int]) -> None:
    def reason(n: int) -> str:
        return f"check {n} (reason number {n})"

    stats = RunStats(
        chunks=3,
        failures=[reason(n) for n in failures],
        final_passed=not final if final or not failures else None,
        final_failures=[reason(n) for n in final],
        retries=[reason(n) for n in retries],
    )
    summary = "\n".join(stats.summary_lines())
    for n in set(failures) | set(final):
        assert summary.count(f"(reason number {n})") == 1, summary
    for n in set(retries) - set(failures) - set(final):
        assert f"(reason number {n})" not in summary
    assert f"failed quick checks: {len(failures)}" in summary


# -- the simulator continues, as a model does -----------------------------------------------------------


def test_a_retry_on_the_simulator_continues_after_the_text_shown() -> None:
    ran = rxllm(
        "stream",
        "x",
        "--backend",
        "scripted",
        "--delay",
        "0",
        "--json",
        "--forbid",
        "Celsius",
        "--retries",
        "1",
    )
    assert ran.code == EXIT_CHECK_FAILED  # the simulator says the same again, and the check fails again
    events = ran.events()
    shown = DEMO_ANSWER[: DEMO_ANSWER.index(" Between 24")]
    assert events[-1]["full_text"] == shown, events[-1]["full_text"]
    assert events[-1]["attempts_used"] == 2
    # The retry's first chunk is the sentence after the text shown (it fails again), not the answer's start.
    retry = [e["type"] for e in events].index("RetryEvent")
    assert [e["type"] for e in events[retry + 1 :]] == ["QuickCheckEvent", "CompletedEvent"]
    assert "Celsius" in events[retry + 1]["results"][0]["reason"]


# -- API keys: cleaned where they enter ---------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("source", ["flag", "env"])
async def test_a_key_pasted_with_its_newline_is_sent_without_it(source: str) -> None:
    async with FakeOpenAIServer(Reply(deltas=tokenize(TEXT))) as server:
        args = ["stream", "x", "--backend", "openai", "--base-url", server.url, "--model", "m"]
        if source == "flag":
            ran = await arxllm(*args, "--api-key", " sk-test\n")
        else:
            env = dict(ENV, OPENAI_API_KEY="sk-test\r\n")
            proc = await asyncio.create_subprocess_exec(
                *PYTHON, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT
            )
            out, err = await asyncio.wait_for(proc.communicate(), 120)
            assert proc.returncode is not None
            ran = _checked(proc.returncode, out, err)
        record = server.requests[-1]
    assert ran.code == EXIT_OK, ran.err
    assert record.headers.get("Authorization") == "Bearer sk-test"


@pytest.mark.parametrize(
    ("key", "environment", "source"),
    [
        ("sk-a\x00b", None, "api_key="),
        (None, "sk-a\tb", "$OPENAI_API_KEY"),
        ("sk-a\x7f", "sk-ok", "api_key="),
    ],
)
def test_the_backend_refuses_a_key_with_a_control_character_inside(
    key: str | None, environment: str | None, source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if environment is None:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    else:
        monkeypatch.setenv("OPENAI_API_KEY", environment)
    with pytest.raises(ValueError, match=rf"the API key from {re.escape(source)} has a control character"):
        OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", api_key=key)


def test_the_backend_strips_a_key_and_treats_a_blank_one_as_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "  \n")
    assert not OpenAIBackend("m", base_url="http://127.0.0.1:9/v1").has_api_key
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", api_key="sk-x\n")
    assert backend._headers(True)["Authorization"] == "Bearer sk-x"


# -- --validation-timeout ---------------------------------------------------------------------------


def test_validation_timeout_is_the_deadline_of_each_check(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def slow(chunk: str) -> bool:
        await asyncio.sleep(30)
        return True

    slow_check = req("a check that takes its time", slow)

    def requirements(args: argparse.Namespace) -> list[Requirement]:
        return [slow_check]

    monkeypatch.setattr("engine.cli.stream.requirements_from_args", requirements)
    args = ["stream", "x", "--backend", "scripted", "--delay", "0", "--plain", "--validation-timeout", "0.05"]
    code = main(args)
    err = capsys.readouterr().err
    assert code == EXIT_CHECK_FAILED, err
    assert "timed out after 0.05 s" in err


# -- the demo's last words ------------------------------------------------------------------------------


@pytest.mark.parametrize("on_path", [False, True])
def test_the_demo_ends_with_a_command_that_runs_as_shown(on_path: bool) -> None:
    bin_dir = Path(PYTHON[0]).parent
    if not (bin_dir / "rxllm").exists():
        pytest.skip("no rxllm console script beside this interpreter")
    path = ([str(bin_dir)] if on_path else []) + ["/usr/bin", "/bin"]
    proc = subprocess.run(
        [*PYTHON, "demo", "--delay", "0"],
        capture_output=True,
        env=dict(ENV, PATH=os.pathsep.join(path)),
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    ran = _checked(proc.returncode, proc.stdout, proc.stderr)
    assert ran.code == EXIT_OK, ran.err
    shown = re.search(r"Next: `(\S+) stream --help`", ran.out)
    assert shown is not None, ran.out
    command = shown.group(1)
    if on_path:
        assert command == "rxllm"
    else:
        assert "/" in command and "source " in ran.out
    # What it says to type works, in the same shell environment.
    help_run = subprocess.run(
        [command, "stream", "--help"] if "/" in command else ["sh", "-c", f"{command} stream --help"],
        capture_output=True,
        env=dict(ENV, PATH=os.pathsep.join(path)),
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert help_run.returncode == 0 and b"usage: rxllm stream" in help_run.stdout


# -- the CLI's modules import without a cycle -------------------------------------------------------------


def _imports(path: Path, package: str, modules: set[str]) -> set[str]:
    """The modules of *package* that *path* imports at module level (under ``if`` too)."""
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = list(tree.body)
    while nodes:
        node = nodes.pop()
        if isinstance(node, ast.If | ast.Try):
            nodes += [*node.body, *node.orelse, *getattr(node, "finalbody", [])]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in modules and name != package}


def test_the_cli_modules_import_each_other_without_a_cycle() -> None:
    folder = ROOT / "engine" / "cli"
    package = "engine.cli"
    modules = {f"{package}.{p.stem}": p for p in folder.glob("*.py") if p.stem != "__init__"}
    graph = {name: _imports(path, package, set(modules)) for name, path in modules.items()}
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        assert name not in trail, " -> ".join([*trail[trail.index(name) :], name])
        if name in done:
            return
        for imported in graph[name]:
            visit(imported, [*trail, name])
        done.add(name)

    for name in graph:
        visit(name, [])
