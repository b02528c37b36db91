"""The errors a check's return value raises: not a coroutine, or not a ``PartialValidationResult``."""

from __future__ import annotations

from typing import Any

from engine.core.requirements import Requirement


def bad_result(req: Requirement, result: Any) -> TypeError:
    return TypeError(
        f"{req!r}.stream_validate() returned {result!r} ({type(result).__name__}); "
        "return PartialValidationResult('pass' | 'fail' | 'unknown') instead"
    )


def not_async(req: Requirement, returned: Any) -> TypeError:
    return TypeError(
        f"{req!r}.stream_validate() returned {type(returned).__name__}, not a coroutine: "
        "declare it `async def stream_validate(self, chunk, *, backend, ctx)`"
    )
