"""Chunking: the strategies that cut text into chunks, their aliases, and the Chunker.

* :class:`ChunkingStrategy` (``strategy.py``): what a strategy is;
* one module per strategy, each registering its alias beside its class
  (``sentence.py``, ``word.py``, ``paragraph.py``, ``json.py``), and :class:`RawDeltas` (``raw.py``,
  ``chunking=None``);
* :data:`CHUNKING_ALIASES`, :func:`register_chunking`, :func:`resolve_chunking_strategy`
  (``registry.py``): the names ``chunking=`` and the command line accept;
* :class:`Chunker` and :class:`Chunk` (``chunker.py``): a strategy driven over a stream of deltas.

Adding a strategy touches one file: its class, decorated with ``@register_chunking("alias")``.
"""

from operators.chunking.chunker import Chunk, Chunker
from operators.chunking.raw import RawDeltas
from operators.chunking.registry import CHUNKING_ALIASES, register_chunking, resolve_chunking_strategy
from operators.chunking.strategy import ChunkingStrategy, Scanner, ScanningStrategy

# The built-in strategies register their aliases as they are imported, in this order: the
# order in which error messages and the command line list them.
# isort: off
from operators.chunking.sentence import SentenceChunking
from operators.chunking.word import WordChunking
from operators.chunking.paragraph import ParagraphChunking
from operators.chunking.json import JsonChunking, JsonChunkingError
# isort: on

__all__ = [
    "CHUNKING_ALIASES",
    "Chunk",
    "Chunker",
    "ChunkingStrategy",
    "JsonChunking",
    "JsonChunkingError",
    "ParagraphChunking",
    "RawDeltas",
    "Scanner",
    "ScanningStrategy",
    "SentenceChunking",
    "WordChunking",
    "register_chunking",
    "resolve_chunking_strategy",
]
