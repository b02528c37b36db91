"""Putting back the whitespace a chunker dropped between chunks, so shown text keeps the model's layout.

Shared by the ``rxllm`` command's views and the gateway (``rxllm serve``), which write each
validated chunk as it comes.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TextTracker"]


class TextTracker:
    """Recovers the whitespace a chunker dropped, so printed text keeps the model's layout."""

    def __init__(self, mot: Any, separator: str) -> None:
        self.mot = mot
        self.separator = separator
        self.pos = 0
        self.count = 0

    def follow(self, mot: Any) -> None:
        """Go on in *mot*, a retry's generation, which continues the text shown so far."""
        self.mot, self.pos = mot, 0

    def piece(self, chunk: str) -> str:
        """*chunk* with the whitespace that preceded it in the model's text."""
        self.count += 1
        text: str = self.mot.text
        at = text.find(chunk, self.pos)
        if at >= 0:
            gap = text[self.pos : at] if self.count > 1 else ""
            self.pos = at + len(chunk)
            return gap + chunk
        return (self.separator if self.count > 1 else "") + chunk
