"""Small helpers shared by the test files: each defined once, here."""

from __future__ import annotations

import signal
import socket

from engine import StreamEvent


def free_port() -> int:
    """A loopback port nothing listens on: bound, then released before it is returned."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sigint_as_in_a_terminal() -> None:
    """A child process's ``preexec_fn``: give it a terminal's default SIGINT handling.

    A job started in the background of a non-interactive shell inherits SIGINT ignored, and
    Python then never installs its Ctrl-C handler.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def deltas(text: str, size: int = 3) -> list[str]:
    """*text* cut into deltas of *size* characters (the last one may be shorter)."""
    return [text[i : i + size] for i in range(0, len(text), size)]


def kinds(events: list[StreamEvent]) -> list[str]:
    """The class name of each event, in order."""
    return [type(e).__name__ for e in events]
