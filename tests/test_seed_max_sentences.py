"""The MaxSentencesReq example of seed 000 (Mellea's "Async and Streaming" page), verbatim but
for its imports, run against ScriptedBackend.

The seed's imports are rewritten line by line (``IMPORTS``); the body is executed as
written, ``asyncio.run(main())`` included. ``start_session`` comes from a stand-in
module whose session has a scripted backend (the real sessions are tested elsewhere).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from backends import ScriptedBackend
from engine import SimpleContext

SEED_BODY = '''
class MaxSentencesReq(Requirement):
    """Fails if the model generates more than *limit* sentences."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._limit = limit
        self._count = 0

    def format_for_llm(self) -> str:
        return f"The response must be at most {self._limit} sentences."

    async def stream_validate(
        self, chunk: str, *, backend: Backend, ctx: Context
    ) -> PartialValidationResult:
        self._count += 1
        if self._count > self._limit:
            return PartialValidationResult("fail", reason="Too many sentences")
        return PartialValidationResult("unknown")

    async def validate(
        self, backend: Backend, ctx: Context, *, format=None, model_options=None
    ) -> ValidationResult:
        return ValidationResult(result=True)


async def main() -> None:
    from mellea.stdlib.session import start_session

    m = start_session()
    action = Instruction("Write a two-sentence summary of the water cycle.")
    req = MaxSentencesReq(limit=3)

    result = await stream_with_chunking(
        action, m.backend, m.ctx, requirements=[req], chunking="sentence"
    )

    async for event in result.events():
        match event:
            case ChunkEvent():
                print(f"  chunk[{event.chunk_index}]: {event.text!r}")
            case QuickCheckEvent(passed=False):
                print(f"  FAIL at chunk {event.chunk_index}: {event.results}")
            case StreamingDoneEvent():
                print(f"  stream done — {len(event.full_text)} chars")
            case FullValidationEvent():
                print(f"  final: {'pass' if event.passed else 'fail'}")
            case CompletedEvent():
                print(f"  completed — success={event.success}")
            case _:
                pass  # ErrorEvent and other future types

    await result.acomplete()
    print(f"completed={result.completed}, failures={len(result.streaming_failures)}")


asyncio.run(main())
'''

SEED_IMPORTS = """\
import asyncio

from mellea.core.backend import Backend
from mellea.core.base import Context
from mellea.core.requirement import PartialValidationResult, Requirement, ValidationResult
from mellea.stdlib.components import Instruction
from mellea.stdlib.streaming import (
    ChunkEvent,
    CompletedEvent,
    FullValidationEvent,
    QuickCheckEvent,
    StreamingDoneEvent,
    stream_with_chunking,
)
"""

# The only change: where each import comes from.
IMPORTS = {
    "from mellea.core.backend import Backend": "from engine import Backend",
    "from mellea.core.base import Context": "from engine import Context",
    "from mellea.core.requirement import": "from engine import",
    "from mellea.stdlib.components import Instruction": "from engine import Instruction",
    "from mellea.stdlib.streaming import (": "from engine import (",
    "from mellea.stdlib.session import start_session": "from scripted_session import start_session",
}


def rewrite_imports(code: str) -> str:
    out = []
    for line in code.splitlines():
        stripped = line.strip()
        for old, new in IMPORTS.items():
            if stripped.startswith(old):
                line = line.replace(old, new)
        out.append(line)
    return "\n".join(out)


def test_the_seed_code_is_verbatim() -> None:
    seed = next(Path(__file__).resolve().parents[2].glob("shared/seeds/000_*.txt"), None)
    if seed is None:
        pytest.skip("the seeds are not beside this checkout")
    text = seed.read_text()
    assert SEED_IMPORTS in text
    assert SEED_BODY.strip() in text


def run_seed(text: str, capsys: pytest.CaptureFixture[str]) -> tuple[str, ScriptedBackend]:
    backend = ScriptedBackend([text[i : i + 4] for i in range(0, len(text), 4)], delay=0.0005)
    stand_in = types.ModuleType("scripted_session")
    stand_in.start_session = lambda: types.SimpleNamespace(backend=backend, ctx=SimpleContext())  # type: ignore[attr-defined]
    sys.modules["scripted_session"] = stand_in
    try:
        exec(compile(rewrite_imports(SEED_IMPORTS + SEED_BODY), "seed_000", "exec"), {"__name__": "seed_000"})
    finally:
        del sys.modules["scripted_session"]
    return capsys.readouterr().out, backend


def test_seed_example_within_the_limit(capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = run_seed("Water evaporates from the sea. It falls again as rain.", capsys)
    assert out.splitlines() == [
        "  chunk[0]: 'Water evaporates from the sea.'",
        "  chunk[1]: 'It falls again as rain.'",
        "  stream done — 54 chars",
        "  final: pass",
        "  completed — success=True",
        "completed=True, failures=0",
    ]


def test_seed_example_over_the_limit_exits_early(capsys: pytest.CaptureFixture[str]) -> None:
    text = "Sun heats water. Vapour rises. Clouds form. Rain falls. Rivers run. " * 20
    out, backend = run_seed(text, capsys)
    lines = out.splitlines()
    assert lines[:3] == [
        "  chunk[0]: 'Sun heats water.'",
        "  chunk[1]: 'Vapour rises.'",
        "  chunk[2]: 'Clouds form.'",
    ]
    assert lines[3] == (
        "  FAIL at chunk 3: (PartialValidationResult(success='fail', reason='Too many sentences', score=None),)"
    )
    assert lines[4:] == ["  completed — success=False", "completed=False, failures=1"]
    assert backend.generations[0].cancelled and backend.generations[0].deltas_sent < len(text) / 4
