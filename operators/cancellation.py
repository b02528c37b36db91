"""The ``cancel_on_fail`` operator."""

from __future__ import annotations

from collections.abc import Callable

from reactivex import Observable
from reactivex import operators as ops

from operators.validation import ChunkVerdict

__all__ = ["cancel_on_fail"]


def cancel_on_fail() -> Callable[[Observable[ChunkVerdict]], Observable[ChunkVerdict]]:
    """Pass verdicts until the first failing one; emit it, complete, and dispose upstream.

    Disposal travels up the chain synchronously, so when the source is a thunk's
    owned delta stream the generation is cancelled in the same call.
    """
    return ops.take_while(_passed, inclusive=True)


def _passed(verdict: ChunkVerdict) -> bool:
    return verdict.passed
