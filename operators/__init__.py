"""Chunking strategies, the incremental Chunker, and the Rx operators of the pipeline.

Each operator is a plain function returning an Rx operator, composable with ``pipe``::

    events = thunk.deltas.pipe(
        chunk("sentence"),
        validate(requirements, backend=backend, ctx=ctx),
        cancel_on_fail(),
        final_validation(requirements, backend=backend, ctx=ctx),
        to_events(lambda: thunk.text),
    )
"""

from operators.cancellation import cancel_on_fail
from operators.chunk_stream import chunk
from operators.chunker import Chunk, Chunker
from operators.chunking import (
    CHUNKING_ALIASES,
    ChunkingStrategy,
    ParagraphChunking,
    SentenceChunking,
    WordChunking,
    resolve_chunking_strategy,
)
from operators.eventing import to_events
from operators.validation import ChunkVerdict, FinalValidation, StreamingDone, final_validation, validate

__all__ = [
    "CHUNKING_ALIASES",
    "Chunk",
    "ChunkVerdict",
    "Chunker",
    "ChunkingStrategy",
    "FinalValidation",
    "ParagraphChunking",
    "SentenceChunking",
    "StreamingDone",
    "WordChunking",
    "cancel_on_fail",
    "chunk",
    "final_validation",
    "resolve_chunking_strategy",
    "to_events",
    "validate",
]
