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

import logging

from operators.cancel_on_fail import cancel_on_fail
from operators.chunk import chunk
from operators.chunking import (
    CHUNKING_ALIASES,
    Chunk,
    Chunker,
    ChunkingStrategy,
    JsonChunking,
    JsonChunkingError,
    ParagraphChunking,
    RawDeltas,
    SentenceChunking,
    WordChunking,
    register_chunking,
    resolve_chunking_strategy,
)
from operators.final_validation import final_validation
from operators.retry_on_fail import retry_on_fail
from operators.to_events import chunk_of, to_events
from operators.validate import validate
from operators.verdicts import ChunkVerdict, FinalValidation, Retrying, RetryRequest, StreamingDone

# Library convention: records go nowhere unless the application configures logging.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "CHUNKING_ALIASES",
    "Chunk",
    "ChunkVerdict",
    "Chunker",
    "ChunkingStrategy",
    "FinalValidation",
    "JsonChunking",
    "JsonChunkingError",
    "ParagraphChunking",
    "RawDeltas",
    "RetryRequest",
    "Retrying",
    "SentenceChunking",
    "StreamingDone",
    "WordChunking",
    "cancel_on_fail",
    "chunk",
    "chunk_of",
    "final_validation",
    "register_chunking",
    "resolve_chunking_strategy",
    "retry_on_fail",
    "to_events",
    "validate",
]
