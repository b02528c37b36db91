"""API keys as they come from a flag, an environment variable or a file: whitespace around a
key is dropped (a key pasted from a file ends in a newline); a control character inside one is
refused, naming where the key came from, before it reaches an HTTP header (where it would fail
as a "header injection" with no word about the key)."""

from __future__ import annotations

import re

__all__ = ["clean_api_key"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_api_key(key: str, source: str) -> str:
    """*key* without surrounding whitespace; ``ValueError`` naming *source* (``--api-key``,
    ``$OPENAI_API_KEY``, ``api_key=``) when a control character is left inside it."""
    key = key.strip()
    control = _CONTROL.search(key)
    if control is not None:
        raise ValueError(
            f"the API key from {source} has a control character ({control.group()!r}) at position "
            f"{control.start()}: give the key alone, on one line"
        )
    return key
