"""The entry point of ``rxllm`` and ``python -m engine``."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from backends.registry import entry
from engine.cli.args import parse
from engine.cli.demo import demo_command
from engine.cli.errors import EXIT_CLOSED_PIPE, EXIT_INTERRUPTED, EXIT_USAGE
from engine.cli.loop import event_loop_factory
from engine.cli.output import wants_live_view
from engine.cli.stream import stream_command
from engine.cli.view import OutputClosed
from engine.telemetry_export import configure_from_environment

__all__ = ["main"]


def _preload(backend_name: str, *, live: bool) -> None:
    """Import what the run needs before the event loop starts, so no import blocks the loop."""
    importlib.import_module("engine.assembly")
    entry(backend_name).backend_class()
    if live:
        importlib.import_module("rich.live")


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is when a record comes: the live view redirects it, so
    log lines print above the live area instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def _log_to_stderr() -> None:
    """``--verbose``: the log records (requests, retries and their reasons, cancels, closes) on stderr."""
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("rxllm: %(name)s: %(message)s"))
    for name in ("backends", "engine", "operators"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)


def _discard_stdout() -> None:
    """Point standard output at /dev/null, so the interpreter's last flush has nowhere to fail."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rxllm`` console script and ``python -m engine``; returns the exit code."""
    args, _ = parse(argv)
    out, err = sys.stdout, sys.stderr
    if args.command == "serve":
        from engine.cli.serve import serve_command  # aiohttp's server is loaded only to serve

        return serve_command(args, err)
    if args.verbose:
        _log_to_stderr()
    configure_from_environment()  # OpenTelemetry exporters, only if the environment asks for them
    stream = args.command == "stream"
    _preload(args.backend if stream else "scripted", live=wants_live_view(args, out))
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            return runner.run(stream_command(args, out, err) if stream else demo_command(args, out, err))
    except KeyboardInterrupt:
        print("rxllm: interrupted", file=err)
        return EXIT_INTERRUPTED
    except OutputClosed:  # `rxllm ... | head`: the reader has what it wanted; leave quietly
        _discard_stdout()
        return EXIT_CLOSED_PIPE
    except (ValueError, TypeError) as exc:  # a backend rejecting its arguments
        print(f"rxllm: {exc}", file=err)
        return EXIT_USAGE
