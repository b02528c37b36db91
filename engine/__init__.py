"""rxllm's public API: streaming with per-chunk validation, thunks, contexts, requirements, events.

Names follow IBM Mellea's async and streaming API, so code written against its docs
runs here with its imports changed.

The value types load eagerly. The assembly (``stream_with_chunking``, sessions) is
built on ``operators``, which itself imports the value types from ``engine``, so it
loads on first use (PEP 562 ``__getattr__``): importing ``operators`` first then
never meets a half-initialised ``engine``.
"""

import logging
from importlib import import_module
from typing import TYPE_CHECKING, Any

from engine.checks import FieldCheck, ForbiddenWords, MaxCharacters, MaxSentences, MaxWords, MustNotMatch, req
from engine.core.backend import Backend
from engine.core.components import CBlock, Component, Instruction, Message
from engine.core.context import ChatContext, Context, SimpleContext
from engine.core.continuation import Continuation, JsonContinuation, StreamRetry
from engine.core.events import (
    ChunkEvent,
    CompletedEvent,
    ErrorEvent,
    FullValidationEvent,
    PartialObjectEvent,
    QuickCheckEvent,
    RetryEvent,
    StreamEvent,
    StreamingDoneEvent,
)
from engine.core.generation import GenerationInfo
from engine.core.options import ModelOption
from engine.core.requirements import PartialValidationResult, Requirement, ValidationResult
from engine.core.thunk import GenerationCancelled, ModelOutputThunk, wait_for_all_mots

# Library convention: records go nowhere unless the application configures logging.
logging.getLogger(__name__).addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from engine.assembly import stream_with_chunking
    from engine.core.typed_output import OutputParseError
    from engine.genslots import GenerativeOutputError, generative
    from engine.result import StreamChunkingResult
    from engine.sampling import (
        RejectionSamplingStrategy,
        RepairTemplateStrategy,
        SamplingAttempt,
        SamplingResult,
        SamplingStrategy,
    )
    from engine.session import MelleaSession, Session
    from engine.session_start import start_session
    from engine.stream_handles import EventStreamer, Streamer, stream

# Public name -> module that defines it, for the names loaded on first use.
_LAZY = {
    "StreamChunkingResult": "engine.result",
    "stream_with_chunking": "engine.assembly",
    "stream": "engine.stream_handles",
    "Streamer": "engine.stream_handles",
    "EventStreamer": "engine.stream_handles",
    "Session": "engine.session",
    "MelleaSession": "engine.session",
    "start_session": "engine.session_start",
    "generative": "engine.genslots",
    "GenerativeOutputError": "engine.genslots",
    "OutputParseError": "engine.core.typed_output",
    "SamplingStrategy": "engine.sampling",
    "RejectionSamplingStrategy": "engine.sampling",
    "RepairTemplateStrategy": "engine.sampling",
    "SamplingResult": "engine.sampling",
    "SamplingAttempt": "engine.sampling",
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
    "Continuation",
    "ErrorEvent",
    "EventStreamer",
    "FullValidationEvent",
    "GenerationCancelled",
    "GenerationInfo",
    "GenerativeOutputError",
    "Instruction",
    "JsonContinuation",
    "MelleaSession",
    "Message",
    "ModelOption",
    "ModelOutputThunk",
    "OutputParseError",
    "PartialValidationResult",
    "PartialObjectEvent",
    "QuickCheckEvent",
    "RejectionSamplingStrategy",
    "RepairTemplateStrategy",
    "Requirement",
    "RetryEvent",
    "SamplingAttempt",
    "SamplingResult",
    "SamplingStrategy",
    "Session",
    "SimpleContext",
    "StreamChunkingResult",
    "StreamEvent",
    "StreamRetry",
    "Streamer",
    "StreamingDoneEvent",
    "ValidationResult",
    "generative",
    "start_session",
    "stream",
    "stream_with_chunking",
    "wait_for_all_mots",
    # Ready-made requirements (engine.checks).
    "FieldCheck",
    "ForbiddenWords",
    "MaxCharacters",
    "MaxSentences",
    "MaxWords",
    "MustNotMatch",
    "req",
]
