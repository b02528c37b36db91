"""``--json``: one JSON object per event, one per line, for scripts."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, TextIO

import attrs

from engine.cli.view import View, write
from engine.core.events import ChunkEvent, FullValidationEvent, QuickCheckEvent, StreamEvent
from engine.core.requirements import PartialValidationResult, Requirement, ValidationResult

__all__ = ["JsonView", "event_to_json"]


def event_to_json(
    event: StreamEvent, *, elapsed: float, requirements: Sequence[Requirement] = ()
) -> dict[str, Any]:
    """One event as a JSON-ready dict: ``type`` (the event class), ``elapsed`` (seconds
    since the run started), then the event's fields. Validation results carry the
    ``requirement`` they belong to (its ``format_for_llm()`` text)."""
    data: dict[str, Any] = {"type": type(event).__name__, "elapsed": round(elapsed, 6)}
    data.update(attrs.asdict(event, filter=lambda a, _: a.name not in ("requirements", "results")))
    if isinstance(event, ChunkEvent) and event.path is None:  # text chunking: no JSON value
        del data["path"], data["value"]
    if isinstance(event, QuickCheckEvent):
        reqs = event.requirements or tuple(requirements)
        data["results"] = [
            _result_json(result, reqs[i] if i < len(reqs) else None) for i, result in enumerate(event.results)
        ]
    elif isinstance(event, FullValidationEvent):
        aligned = len(requirements) == len(event.results)
        data["results"] = [
            _result_json(result, requirements[i] if aligned else None)
            for i, result in enumerate(event.results)
        ]
    return data


def _result_json(
    result: PartialValidationResult | ValidationResult, requirement: Requirement | None
) -> dict[str, Any]:
    data: dict[str, Any] = {"requirement": None if requirement is None else requirement.format_for_llm()}
    data.update(attrs.asdict(result))
    return data


class JsonView(View):
    """One JSON object per event, one per line."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def event(self, event: StreamEvent, piece: str | None) -> None:
        elapsed = time.perf_counter() - self.stats.started_at
        data = event_to_json(event, elapsed=elapsed, requirements=self.requirements)
        write(self.out, json.dumps(data, ensure_ascii=False) + "\n")
