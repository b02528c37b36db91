"""Run a scenario in a fresh interpreter (``python -X dev -W error``), so interpreter shutdown is
part of the test: "Unclosed client session", "Task was destroyed", a ResourceWarning or a shutdown
traceback shows on its stderr, which must stay empty."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_isolated(script: str, *args: str) -> str:
    """Run *script* with *args* from the repository root; assert it exits 0 with an empty
    stderr, and return its stdout, stripped."""
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", script, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    return done.stdout.strip()
