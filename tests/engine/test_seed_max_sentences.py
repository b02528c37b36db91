"""Seed 000's MaxSentencesReq example on ScriptedBackend, past its limit: the early exit.

The block and its import rewriting are those of ``tests/engine/test_seeds_async.py`` (which
runs it within the limit on both backends); here its ``start_session`` gives a
session on a ScriptedBackend whose answer has more sentences than the limit.
"""

from __future__ import annotations

import sys
import types

import pytest

from backends import ScriptedBackend
from engine.session_start import start_session
from tests.engine.test_seeds_async import SEEDS, rewrite_imports

TOO_LONG = "Sun heats water. Vapour rises. Clouds form. Rain falls. Rivers run. " * 20


def test_seed_example_over_the_limit_exits_early_and_cancels(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = ScriptedBackend([TOO_LONG[i : i + 4] for i in range(0, len(TOO_LONG), 4)], delay=0.0005)
    stand_in = types.ModuleType("seed_mellea")
    stand_in.start_session = lambda: start_session(backend)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "seed_mellea", stand_in)

    exec(compile(rewrite_imports(SEEDS["000-5"]), "seed 000-5", "exec"), {"__name__": "seed_000_5"})

    assert capsys.readouterr().out.splitlines() == [
        "  chunk[0]: 'Sun heats water.'",
        "  chunk[1]: 'Vapour rises.'",
        "  chunk[2]: 'Clouds form.'",
        "  FAIL at chunk 3: (PartialValidationResult(success='fail', reason='Too many sentences', score=None),)",
        "  completed — success=False",
        "completed=False, failures=1",
    ]
    record = backend.generations[0]
    assert record.cancelled and record.cancelled_at is not None
    assert record.deltas_sent < len(backend.deltas)
