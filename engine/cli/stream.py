"""``rxllm stream PROMPT``: one run against the backend the flags name."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from backends.registry import BackendEntry, entry
from engine.cli.args import (
    SCRIPT_DELAY,
    backend_arguments,
    model_for,
    requirements_from_args,
    retry_from_args,
)
from engine.cli.demo import DEMO_ANSWER, tokenize
from engine.cli.errors import error_lines
from engine.cli.output import make_view
from engine.cli.run import instruction, run_once
from engine.core.backend import Backend

__all__ = ["build_backend", "stream_command"]


def _script(args: argparse.Namespace) -> list[str]:
    if args.script is None:
        text = DEMO_ANSWER
    elif args.script == "-":
        text = sys.stdin.read()
    else:
        with open(args.script, encoding="utf-8") as file:
            text = file.read()
    return tokenize(text)


def build_backend(args: argparse.Namespace, backend: BackendEntry) -> tuple[Backend, int | None]:
    """The backend the flags ask for, and the length of its script for the simulator.

    Raises ``ValueError``/``TypeError`` where the backend rejects its arguments.
    """
    arguments = backend_arguments(args)
    script_length = None
    if backend.accepts("deltas"):  # the simulator: it replays --script
        deltas = _script(args)
        arguments |= {"deltas": deltas, "delay": SCRIPT_DELAY if args.delay is None else args.delay}
        script_length = len(deltas)
    return backend.create(model_for(args, backend), **arguments), script_length


async def stream_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """One run; returns the exit code. The error that stopped it, if any, is printed once on *err*."""
    chosen = entry(args.backend)
    model = model_for(args, chosen) or ""
    reqs = requirements_from_args(args)
    backend, script_length = build_backend(args, chosen)
    try:
        where = getattr(backend, "base_url", None) or "simulator"
        title = f"{chosen.name} · {model} · {where} · {args.chunking} chunks"
        stats = await run_once(
            instruction(args.prompt, reqs),
            backend,
            reqs,
            args.chunking,
            make_view(args, out, err, demo=False),
            title=title,
            script_length=script_length,
            retry=retry_from_args(args),
            validation_timeout=args.validation_timeout,
        )
    finally:
        aclose = getattr(backend, "aclose", None)
        if aclose is not None:
            await aclose()
    if stats.error is not None:
        err.write("".join(line + "\n" for line in error_lines(stats.error, chosen, model, backend)))
    return stats.exit_code
