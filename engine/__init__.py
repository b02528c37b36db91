"""rxllm's public API: streaming with per-chunk validation, thunks, contexts, requirements, events.

Names follow IBM Mellea's async and streaming API, so code written against its docs
runs here with its imports changed.

The value types load eagerly. The assembly (``stream_with_chunking``, sessions) is
built on ``operators``, which itself imports the value types from ``engine``, so it
loads on first use (PEP 562 ``__getattr__``): importing ``operators`` first then
never meets a half-initialised ``engine``.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from engine.backend import Backend
from engine.components import CBlock, Component, Instruction, Message
from engine.context import ChatContext, Context, SimpleContext
from engine.events import (
    ChunkEvent,
    CompletedEvent,
    ErrorEvent,
    FullValidationEvent,
    QuickCheckEvent,
    RetryEvent,
    StreamEvent,
    StreamingDoneEvent,
)
from engine.options import ModelOption
from engine.requirements import PartialValidationResult, Requirement, ValidationResult
from engine.thunk import GenerationInfo, ModelOutputThunk, wait_for_all_mots

if TYPE_CHECKING:
    from engine.streaming import StreamChunkingResult, stream_with_chunking

# Public name -> module that defines it, for the names loaded on first use.
_LAZY = {
    "StreamChunkingResult": "engine.streaming",
    "stream_with_chunking": "engine.streaming",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Backend",
    "CBlock",
    "ChatContext",
    "ChunkEvent",
    "CompletedEvent",
    "Component",
    "Context",
    "ErrorEvent",
    "FullValidationEvent",
    "GenerationInfo",
    "Instruction",
    "Message",
    "ModelOption",
    "ModelOutputThunk",
    "PartialValidationResult",
    "QuickCheckEvent",
    "Requirement",
    "RetryEvent",
    "SimpleContext",
    "StreamChunkingResult",
    "StreamEvent",
    "StreamingDoneEvent",
    "ValidationResult",
    "stream_with_chunking",
    "wait_for_all_mots",
]
