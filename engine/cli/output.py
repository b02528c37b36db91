"""Which view the output flags, and whether standard output is a terminal, ask for."""

from __future__ import annotations

import argparse
from typing import TextIO

from engine.cli.event_lines import EventLinesView
from engine.cli.json_lines import JsonView
from engine.cli.plain import PlainTextView
from engine.cli.view import View

__all__ = ["make_view", "wants_live_view"]


def wants_live_view(args: argparse.Namespace, out: TextIO) -> bool:
    """The live view: neither --json, --events nor --plain, and *out* is a terminal."""
    return not (args.json or args.events or args.plain) and out.isatty()


def make_view(args: argparse.Namespace, out: TextIO, err: TextIO, *, demo: bool) -> View:
    """A fresh view for one run."""
    if args.json:
        return JsonView(out)
    if args.events:
        return EventLinesView(out, indent="  " if demo else "", notes=demo)
    if wants_live_view(args, out):
        from rich.console import Console

        from engine.cli.live import LiveView

        return LiveView(Console(file=out))
    if demo:
        return EventLinesView(out, indent="  ", notes=True)
    return PlainTextView(out, err)
