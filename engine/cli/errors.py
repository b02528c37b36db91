"""Exit codes, and errors told once, with advice for the command line rather than for Python."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backends.registry import BackendEntry

__all__ = [
    "EXIT_BACKEND_ERROR",
    "EXIT_CHECK_FAILED",
    "EXIT_CLOSED_PIPE",
    "EXIT_INTERRUPTED",
    "EXIT_MODEL_MISSING",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "error_lines",
    "exit_code_for",
]

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_MODEL_MISSING = 4
EXIT_BACKEND_ERROR = 5
EXIT_INTERRUPTED = 130
EXIT_CLOSED_PIPE = 141
"""Standard output was closed by its reader (``| head``): 128 + SIGPIPE, as the shell's own tools."""

FLAGS = {"base_url": "--base-url", "api_key": "--api-key", "timeout": "--timeout", "model_id": "--model"}
"""Backend constructor keywords and the flag that sets each.

Not ``retries``: the backend's ``retries=`` re-sends a request that failed before any token (a
429, a 503), while ``rxllm stream --retries N`` continues an answer whose chunk failed a check. No
flag sets the backend's, so advice about it is advice for Python and is left out."""

_KEYWORD = re.compile(r"\b([a-z][a-z_]*)=(?=([\w.]?))")
_PARENTHESIS = re.compile(r"\s*\([^()]*\)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`])")
_PYTHON_ONLY = ("thunk", "start_session", "ScriptedBackend", "aclose()")
"""Words that make a sentence of a backend's message advice for Python code."""


def exit_code_for(error: BaseException) -> int:
    """The exit code for an error that stopped a run."""
    if isinstance(error, KeyboardInterrupt | asyncio.CancelledError):
        return EXIT_INTERRUPTED
    from backends.errors import BackendUnreachableError, ConnectTimeoutError, ModelNotFoundError

    if isinstance(error, BackendUnreachableError | ConnectTimeoutError):
        return EXIT_UNREACHABLE
    if isinstance(error, ModelNotFoundError):
        return EXIT_MODEL_MISSING
    return EXIT_BACKEND_ERROR


def _flag(match: re.Match[str]) -> str:
    """``base_url=`` -> ``--base-url``; ``timeout=0.5`` -> ``--timeout 0.5``."""
    return FLAGS[match.group(1)] + (" " if match.group(2) else "")


def _for_python(text: str) -> bool:
    """Whether *text* speaks of ``None``, a keyword no flag sets, or another Python-only thing."""
    return (
        any(k not in FLAGS for k, _ in _KEYWORD.findall(text))
        or any(word in text for word in _PYTHON_ONLY)
        or re.search(r"\bNone\b", text) is not None
    )


def _for_command_line(clause: str) -> str | None:
    """*clause* with its keywords as flags, or ``None`` when it is advice for Python only."""
    clause = _PARENTHESIS.sub(lambda m: "" if _for_python(m.group(0)) else m.group(0), clause)
    return None if _for_python(clause) else _KEYWORD.sub(_flag, clause)


def for_command_line(message: str, python_hints: tuple[str, ...] = ()) -> str:
    """*message* without its advice for Python: the backend's own hints (*python_hints*) and
    every clause about a keyword argument no flag sets are left out; ``base_url=`` and the
    other keywords a flag sets become the flag."""
    for hint in python_hints:
        if hint:
            message = message.replace(hint, "")
    sentences = []
    for sentence in _SENTENCE_END.split(message.strip()):
        clauses = [c for c in map(_for_command_line, sentence.split("; ")) if c]
        if clauses:
            text = "; ".join(clauses)
            sentences.append(text if text.endswith((".", "!", "?")) else text + ".")
    # Nothing but advice for Python: say what happened anyway, its keywords as they are.
    return " ".join(sentences) or message.strip()


def _hint(error: BaseException, entry: BackendEntry, model: str) -> str | None:
    from backends.errors import AuthenticationError

    code = exit_code_for(error)
    if code == EXIT_UNREACHABLE:
        start = f"start it with `{entry.start_hint}`" if entry.start_hint else "start your server"
        variable = entry.environment.get("base_url")
        where = f"--base-url (or ${variable})" if variable else "--base-url"
        return (
            f"hint: {start}, or point {where} at it; `rxllm demo` runs without any server, "
            "and `--backend scripted` replays a canned answer"
        )
    if code == EXIT_MODEL_MISSING:
        if entry.pull_hint:
            pull = entry.pull_hint.format(model=model)
            return f"hint: download the model with `{pull}`, or choose another with --model"
        return "hint: choose a model the server serves with --model"
    if isinstance(error, AuthenticationError):
        variable = entry.environment.get("api_key")
        return f"hint: give the server's key with --api-key{f' (or ${variable})' if variable else ''}"
    return None


def error_lines(error: BaseException, entry: BackendEntry, model: str, backend: object) -> list[str]:
    """What to print on standard error, once, for the *error* that stopped a run on *backend*."""
    if isinstance(error, KeyboardInterrupt | asyncio.CancelledError):
        return ["rxllm: interrupted"]
    hints = []
    for name in ("hint_unreachable", "hint_model_not_found", "hint_auth", "hint_wire_format"):
        python_hint = getattr(backend, name, None)
        if callable(python_hint):
            hints.append(str(python_hint()))
    lines = [f"rxllm: {type(error).__name__}: {for_command_line(str(error), tuple(hints))}"]
    hint = _hint(error, entry, model)
    if hint:
        lines.append(hint)
    return lines
