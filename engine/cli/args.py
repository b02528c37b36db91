"""The command line: the parsers of ``rxllm``, ``rxllm demo`` and ``rxllm stream``, and what the
``stream`` flags ask for (requirements, generation options, backend arguments)."""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Sequence
from importlib import metadata
from typing import Any

import attrs

from backends.credentials import clean_api_key
from backends.registry import BACKENDS, BackendEntry, entry
from engine.checks import ForbiddenWords, MaxCharacters, MaxSentences, MaxWords, MustNotMatch
from engine.core.continuation import StreamRetry
from engine.core.options import ModelOption
from engine.core.requirements import Requirement
from operators.chunking import CHUNKING_ALIASES

__all__ = [
    "DEMO_DELAY",
    "Number",
    "SCRIPT_DELAY",
    "backend_arguments",
    "build_parser",
    "check_stream_args",
    "generation_options",
    "model_for",
    "parse",
    "requirements_from_args",
    "retry_from_args",
    "stream_retry",
]

DEMO_DELAY = 0.03
"""Seconds between two simulated tokens in ``rxllm demo``."""
SCRIPT_DELAY = 0.02
"""Seconds between two tokens of ``--backend scripted`` unless ``--delay`` says otherwise."""

GENERATION_FLAGS = {
    "max_tokens": ("--max-tokens", ModelOption.MAX_NEW_TOKENS),
    "temperature": ("--temperature", ModelOption.TEMPERATURE),
    "seed": ("--seed", ModelOption.SEED),
    "system": ("--system", ModelOption.SYSTEM_PROMPT),
}
"""``args`` attribute -> (flag, the ``ModelOption`` it sets)."""


# -- values of flags ------------------------------------------------------------------------


@attrs.frozen
class Number:
    """The type of every numeric flag: parses a whole number (*whole*) or a finite number, at
    least *minimum* (above it when *above*), and refuses anything else with one message per flag,
    whatever the bad value (``expected a whole number >= 1, got '0'``)."""

    whole: bool = False
    minimum: float | None = None
    above: bool = False
    unit: str = ""
    """What the number counts, said in the message (``seconds``)."""

    @property
    def expected(self) -> str:
        """What the flag takes: ``a whole number >= 0``, ``a number of seconds > 0``."""
        noun = "a whole number" if self.whole else "a number"
        noun += f" of {self.unit}" if self.unit else ""
        if self.minimum is None:
            return noun
        bound = int(self.minimum) if self.minimum == int(self.minimum) else self.minimum
        return f"{noun} {'>' if self.above else '>='} {bound}"

    def __call__(self, text: str) -> float:
        value: float | None
        try:
            value = int(text) if self.whole else float(text)
        except ValueError:
            value = None
        if value is None or not self._meets(value):
            raise argparse.ArgumentTypeError(f"expected {self.expected}, got {text!r}")
        return value

    def _meets(self, value: float) -> bool:
        if not self.whole and not math.isfinite(value):  # (a whole number is always finite)
            return False
        low = self.minimum
        return low is None or (value > low if self.above else value >= low)


COUNT = Number(whole=True, minimum=0)
"""A count that may be 0 (``--max-words``, ``--retries``)."""
POSITIVE_COUNT = Number(whole=True, minimum=1)
WHOLE_NUMBER = Number(whole=True)
NONNEGATIVE = Number(minimum=0)
SECONDS = Number(minimum=0, unit="seconds")
"""A wait that may be 0 (``--delay``)."""
DEADLINE = Number(minimum=0, above=True, unit="seconds")
"""A deadline: a wait of 0 would fail everything (``--timeout``, ``--validation-timeout``)."""


def _base_url(text: str) -> str:
    if not re.match(r"https?://[^/\s]+", text):
        raise argparse.ArgumentTypeError(
            f"expected an http:// or https:// URL such as http://localhost:11434, got {text!r}"
        )
    return text


def _api_key(text: str) -> str:
    try:
        return clean_api_key(text, "--api-key")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _prompt(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError(
            'the prompt is empty: say what to ask the model, e.g. rxllm stream "Why is the sky blue?"'
        )
    return text


def _words(text: str) -> list[str]:
    words = [word.strip() for word in text.split(",")]
    if not all(words):
        raise argparse.ArgumentTypeError(f"an empty word in {text!r}: give words separated by commas")
    return words


def _pattern(text: str) -> str:
    try:
        re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid regular expression: {exc}") from None
    return text


# -- the parsers ----------------------------------------------------------------------------------


def _defaults_help(keyword: str, fallback: str) -> str:
    """Where each backend looks for *keyword* when its flag is not given, from the registry."""
    places = []
    for backend in BACKENDS.values():
        variable = backend.environment.get(keyword)
        if variable is None:
            continue
        default = backend.default_base_url if keyword == "base_url" else None
        default = f" or {default}" if default else ""
        places.append(f"${variable}{default} for {backend.name}")
    return "; ".join(places) or fallback


def _model_help() -> str:
    defaults = [f"{b.default_model} for {b.name}" for b in BACKENDS.values() if b.default_model]
    needed = [f"{b.name} needs one, e.g. {b.model_example}" for b in BACKENDS.values() if b.model_required]
    return f"model name (default: $RXLLM_MODEL, else {', '.join(defaults)}; {'; '.join(needed)})"


def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="rxllm",
        description="Stream LLM output through reactive pipelines with per-chunk validation.",
        epilog="Start with `rxllm demo` (no model server needed).",
    )
    parser.add_argument("--version", action="version", version=f"rxllm {metadata.version('rxllm')}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        help="run the pipeline on the built-in simulator, three times (passing, failing mid-stream, "
        "retrying)",
        description="Replay a canned answer through stream_with_chunking with ready-made requirements: "
        "once passing, once with a check that fails mid-stream, once with a check that fails a sentence "
        "and a retry that continues the answer without it. Needs no model server.",
    )
    demo.add_argument(
        "--delay",
        type=SECONDS,
        default=DEMO_DELAY,
        metavar="SECONDS",
        help=f"seconds between simulated tokens (default {DEMO_DELAY})",
    )
    _add_output_flags(demo)

    stream = commands.add_parser(
        "stream",
        help="stream a prompt from a model server with per-chunk validation",
        description="Stream PROMPT from a model server, validating each chunk as it arrives; "
        "the first failing check cancels the generation.",
        epilog="exit codes: 0 passed; 1 a requirement failed; 2 bad command line; "
        "3 server unreachable; 4 model not on the server; 5 other server error; 130 interrupted; "
        "141 standard output closed",
    )
    stream.add_argument("prompt", type=_prompt, metavar="PROMPT", help="what to ask the model")
    add_model_flags(stream)
    _add_output_flags(stream)
    return parser, {"demo": demo, "stream": stream, "serve": _serve_parser(commands)}


def add_model_flags(stream: argparse.ArgumentParser) -> None:
    """The flags ``rxllm stream`` shares with ``rxllm serve``: model server, generation, checks, simulator."""
    server = stream.add_argument_group("model server")
    default = next(iter(BACKENDS))
    server.add_argument(
        "--backend",
        choices=tuple(BACKENDS),
        default=default,
        help="; ".join(
            f"{b.name}{' (default)' if b.name == default else ''}: {b.summary}" for b in BACKENDS.values()
        ),
    )
    server.add_argument("--model", help=_model_help())
    server.add_argument(
        "--base-url", type=_base_url, help=f"server URL (default: {_defaults_help('base_url', '')})"
    )
    server.add_argument(
        "--api-key", type=_api_key, help=f"API key (default: {_defaults_help('api_key', 'none')})"
    )
    server.add_argument(
        "--timeout",
        type=DEADLINE,
        metavar="SECONDS",
        help="give up on a generation that has not finished after this many seconds (default: none)",
    )

    generation = stream.add_argument_group("generation")
    generation.add_argument("--max-tokens", type=POSITIVE_COUNT, metavar="N", help="stop after N tokens")
    generation.add_argument(
        "--temperature", type=NONNEGATIVE, metavar="T", help="sampling temperature, e.g. 0.2"
    )
    generation.add_argument(
        "--seed", type=WHOLE_NUMBER, metavar="N", help="random seed, for repeatable answers"
    )
    generation.add_argument("--system", metavar="TEXT", help="a system prompt sent before PROMPT")

    checks = stream.add_argument_group("checks (each chunk, then the whole output)")
    checks.add_argument(
        "--chunking", choices=tuple(CHUNKING_ALIASES), default="sentence", help="unit of validation"
    )
    checks.add_argument("--max-sentences", type=COUNT, metavar="N", help="fail after N sentences")
    checks.add_argument("--max-words", type=COUNT, metavar="N", help="fail after N words")
    checks.add_argument("--max-chars", type=COUNT, metavar="N", help="fail after N characters")
    checks.add_argument(
        "--forbid",
        type=_words,
        action="extend",
        default=[],
        metavar="WORD",
        help="fail on this word (whole word, any case); repeat the flag or give a comma list: "
        "--forbid cat --forbid dog, --forbid cat,dog",
    )
    checks.add_argument(
        "--regex",
        type=_pattern,
        action="append",
        default=[],
        metavar="PATTERN",
        help="fail when a chunk (or the whole output) matches; repeatable",
    )

    checks.add_argument(
        "--retries",
        type=COUNT,
        default=0,
        metavar="N",
        help="when a chunk fails a check that a new attempt could fix, withhold it and continue the "
        "answer from the text already shown, up to N times (default 0: stop at the first failure)",
    )
    checks.add_argument(
        "--validation-timeout",
        type=DEADLINE,
        metavar="SECONDS",
        help="deadline of each check on a chunk or on the whole output: a check still running after "
        "SECONDS is cancelled and fails (default: none)",
    )

    simulator = stream.add_argument_group("simulator (--backend scripted)")
    simulator.add_argument(
        "--script",
        metavar="FILE",
        help="the text to replay ('-' reads standard input; default: a canned answer)",
    )
    simulator.add_argument(
        "--delay",
        type=SECONDS,
        metavar="SECONDS",
        help=f"seconds between tokens (default {SCRIPT_DELAY})",
    )


def _add_output_flags(command: argparse.ArgumentParser) -> None:
    output = command.add_argument_group("output")
    style = output.add_mutually_exclusive_group()
    style.add_argument("--events", action="store_true", help="print one line per event")
    style.add_argument("--json", action="store_true", help="print one JSON object per event, one per line")
    style.add_argument("--plain", action="store_true", help="plain output even on a terminal")
    output.add_argument(
        "--verbose",
        action="store_true",
        help="log on stderr: requests, retries with reasons, the cancel, the connection close",
    )


def _serve_parser(commands: Any) -> argparse.ArgumentParser:
    """``rxllm serve``: the flags of ``stream`` (upstream, generation, checks), then the service's own.

    Flags not given are absent from the parsed arguments (not defaulted), so that the values
    of ``--config`` stand unless a flag overrides them.
    """
    serve: argparse.ArgumentParser = commands.add_parser(
        "serve",
        help="run an OpenAI-compatible gateway that validates every stream (POST /v1/chat/completions)",
        description="Serve OpenAI's chat-completions API in front of a model server, validating each "
        "chunk before it reaches the client: a failing check ends the answer with finish_reason "
        "content_filter; a client that disconnects cancels the upstream generation.",
        epilog="Every flag can also be a key of --config (the long name with _ for -); flags win. "
        "exit codes: 2 bad command line or configuration",
        argument_default=argparse.SUPPRESS,
        conflict_handler="resolve",
    )
    add_model_flags(serve)
    for action in serve._actions:  # stream's flags default for stream; here a flag not given is absent
        action.default = argparse.SUPPRESS
    service = serve.add_argument_group("service")
    service.add_argument(
        "--config", metavar="FILE", help="a TOML file of settings (keys: the long flag names)"
    )
    service.add_argument("--host", metavar="ADDRESS", help="address to listen on (default 127.0.0.1)")
    service.add_argument("--port", type=COUNT, metavar="N", help="port to listen on (default 8000)")
    service.add_argument(
        "--client-key",
        metavar="KEY",
        help="the key clients must send as 'Authorization: Bearer KEY' (default: $RXLLM_SERVE_CLIENT_KEY; "
        "required to listen on a non-loopback address); --api-key is the upstream's",
    )
    service.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="listen on a non-loopback address without a client key (something in front authenticates)",
    )
    service.add_argument(
        "--requirements",
        metavar="MODULE:FACTORY",
        help="custom checks: a callable returning a list of Requirement objects, called once per request",
    )
    service.add_argument(
        "--request-timeout",
        type=DEADLINE,
        metavar="SECONDS",
        help="cancel a request's generation after this long (default 600)",
    )
    service.add_argument(
        "--max-streams",
        type=POSITIVE_COUNT,
        metavar="N",
        help="concurrent requests per worker; beyond, 503 with Retry-After (default 1000)",
    )
    service.add_argument(
        "--max-body-bytes", type=POSITIVE_COUNT, metavar="N", help="largest request body (default 1048576)"
    )
    service.add_argument(
        "--max-messages", type=POSITIVE_COUNT, metavar="N", help="most messages (default 256)"
    )
    service.add_argument(
        "--idle-timeout",
        type=DEADLINE,
        metavar="SECONDS",
        help="drop a client that sends or reads nothing for this long (default 60)",
    )
    service.add_argument(
        "--workers",
        type=POSITIVE_COUNT,
        metavar="N",
        help="worker processes, run by gunicorn with aiohttp's worker (default 1: no gunicorn)",
    )
    service.add_argument(
        "--verbose", action="store_true", help="log every request and the backends' actions on stderr"
    )
    return serve


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``rxllm``."""
    return _parsers()[0]


def parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, argparse.ArgumentParser]:
    """Parse *argv*; return the arguments and the parser of their command (for usage errors).

    Bad command lines exit 2 with the command's own usage (``SystemExit``).
    """
    parser, commands = _parsers()
    args, extra = parser.parse_known_args(argv)
    command = commands[args.command]
    if extra:
        message = f"unrecognized arguments: {' '.join(extra)}"
        if getattr(args, "forbid", None):
            message += "; --forbid takes one word (or a comma list: --forbid cat,dog), so repeat it"
        command.error(message)
    if args.command == "stream":
        check_stream_args(args, command)
    return args, command


# -- what the stream flags ask for ------------------------------------------------------------------


def model_for(args: argparse.Namespace, backend: BackendEntry) -> str | None:
    """The model: ``--model``, else ``$RXLLM_MODEL``, else the backend's default."""
    return args.model or os.environ.get("RXLLM_MODEL") or backend.default_model


def _flags_used(args: argparse.Namespace) -> list[tuple[str, str]]:
    """``(flag, constructor keyword)`` for every backend-specific flag given."""
    used = [
        (flag, keyword)
        for flag, keyword, value in (
            ("--base-url", "base_url", args.base_url),
            ("--api-key", "api_key", args.api_key),
            ("--timeout", "timeout", args.timeout),
            ("--script", "deltas", args.script),
            ("--delay", "delay", args.delay),
        )
        if value is not None
    ]
    used += [
        (flag, "model_options")
        for name, (flag, _) in GENERATION_FLAGS.items()
        if getattr(args, name) is not None
    ]
    return used


def check_stream_args(args: argparse.Namespace, command: argparse.ArgumentParser) -> None:
    """The checks no single flag can make: each flag suits the chosen backend, a model is named
    where one must be, the script file exists. Exits 2 with ``stream``'s usage."""
    backend = entry(args.backend)
    for flag, keyword in _flags_used(args):
        if not backend.accepts(keyword):
            takers = [f"--backend {b.name}" for b in BACKENDS.values() if b.accepts(keyword)]
            where = f" (only to {' or '.join(takers)})" if takers else ""
            command.error(f"{flag} does not apply to --backend {backend.name}{where}")
    if backend.model_required and not model_for(args, backend):
        example = backend.model_example
        command.error(f"--backend {backend.name} needs --model: the name the server serves, e.g. {example}")
    if args.script not in (None, "-") and not os.path.isfile(args.script):
        command.error(f"--script {args.script!r}: no such file")


def requirements_from_args(args: argparse.Namespace) -> list[Requirement]:
    """The requirements the ``stream`` flags ask for."""
    reqs: list[Requirement] = []
    if args.max_sentences is not None:
        reqs.append(MaxSentences(args.max_sentences))
    if args.max_words is not None:
        reqs.append(MaxWords(args.max_words))
    if args.max_chars is not None:
        reqs.append(MaxCharacters(args.max_chars))
    if args.forbid:
        reqs.append(ForbiddenWords(args.forbid))
    reqs.extend(MustNotMatch(pattern) for pattern in args.regex)
    return reqs


def stream_retry(retries: int) -> StreamRetry | None:
    """The in-stream retry that allows *retries* new attempts after the first (``None`` for 0)."""
    return StreamRetry(max_attempts=retries + 1) if retries else None


def retry_from_args(args: argparse.Namespace) -> StreamRetry | None:
    """The in-stream retry ``--retries N`` asks for (``None`` for 0)."""
    return stream_retry(getattr(args, "retries", 0) or 0)


def generation_options(args: argparse.Namespace) -> dict[str, Any]:
    """The model options the generation flags set (``ModelOption`` keys)."""
    return {
        option: getattr(args, name)
        for name, (_, option) in GENERATION_FLAGS.items()
        if getattr(args, name) is not None
    }


def backend_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """Constructor keywords for the backend, from the server and generation flags given
    (the simulator's script is read by the caller)."""
    given = {"base_url": args.base_url, "api_key": args.api_key, "timeout": args.timeout}
    arguments: dict[str, Any] = {keyword: value for keyword, value in given.items() if value is not None}
    options = generation_options(args)
    if options:
        arguments["model_options"] = options
    return arguments
