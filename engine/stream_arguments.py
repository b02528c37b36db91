"""The checks of a streaming run's arguments (``stream_with_chunking`` and ``stream()``).

Everything is checked before the backend is called, so a refused call starts no
generation and leaves nothing running. The wording is :mod:`engine.core.arguments`';
the chunking aliases are the chunking strategies' own (``operators``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.core import arguments
from engine.core.context import Context
from engine.core.continuation import StreamRetry
from engine.core.requirements import Requirement, as_requirements
from operators.chunking import CHUNKING_ALIASES, ChunkingStrategy, resolve_chunking_strategy

__all__ = ["check_stream_arguments", "chunking_strategy"]

_BACKEND = "a backend (an object with an async generate_from_context())"


def chunking_strategy(name: str, value: object) -> ChunkingStrategy:
    """The strategy *value* names: an alias (``"sentence"``, ``"word"``, ``"paragraph"``) or a
    :class:`ChunkingStrategy` instance; anything else is refused naming *name*."""
    allowed = f"one of {', '.join(map(repr, CHUNKING_ALIASES))}, or a ChunkingStrategy instance"
    if isinstance(value, ChunkingStrategy):
        return value
    if not isinstance(value, str):
        raise TypeError(f"{name} must be {allowed}; got {arguments.shown(value)}")
    if value not in CHUNKING_ALIASES:
        raise ValueError(f"Unknown chunking alias {value!r} for {name}: it must be {allowed}")
    return resolve_chunking_strategy(value)


def check_stream_arguments(
    action: Any,
    backend: Any,
    ctx: Any,
    *,
    requirements: Sequence[Requirement] | None,
    validation_backend: Any,
    validation_timeout: Any,
    retry: Any,
    model_options: Any = None,
) -> list[Requirement]:
    """Check every argument of a run but its chunking (*model_options*: the backend's options,
    a mapping with str keys, or None); return the requirements, normalised.

    Each requirement's own settings are checked again here (they may have been set after
    construction), its chunking alias resolved, so that no check can fail to start once
    the generation runs.
    """
    arguments.component("action", action)
    arguments.has_method("backend", backend, "generate_from_context", _BACKEND)
    arguments.instance("ctx", ctx, Context, "a Context (e.g. SimpleContext() or ChatContext())")
    reqs = as_requirements(requirements)
    for index, req in enumerate(reqs):
        own = getattr(req, "chunking", None)
        if own is not None:
            chunking_strategy(f"requirements[{index}].chunking", own)
    if validation_backend is not None:
        arguments.has_method(
            "validation_backend", validation_backend, "generate_from_context", _BACKEND + ", or None"
        )
    arguments.positive_seconds("validation_timeout", validation_timeout)
    arguments.optional_mapping("model_options", model_options)
    if retry is not None:
        arguments.instance(
            "retry", retry, StreamRetry, "a StreamRetry (e.g. StreamRetry(max_attempts=3)), or None"
        )
    return reqs
