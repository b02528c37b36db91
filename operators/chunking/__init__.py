"""Chunking: the strategies that cut text into chunks, and the Chunker that drives one over a stream."""

from operators.chunking.chunker import Chunk, Chunker
from operators.chunking.strategy import (
    CHUNKING_ALIASES,
    ChunkingStrategy,
    ParagraphChunking,
    SentenceChunking,
    WordChunking,
    resolve_chunking_strategy,
)

__all__ = [
    "CHUNKING_ALIASES",
    "Chunk",
    "Chunker",
    "ChunkingStrategy",
    "ParagraphChunking",
    "SentenceChunking",
    "WordChunking",
    "resolve_chunking_strategy",
]
