"""Model options understood by every backend.

The keys are sentinel strings (``"@@@stream@@@"``) so they never collide with a
provider's own option names, which backends pass through unchanged.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["ModelOption"]


class ModelOption:
    """Keys for the ``model_options`` mapping passed to a backend."""

    STREAM: Final = "@@@stream@@@"
    """Stream the output: the thunk receives deltas as the server sends them."""
    TEMPERATURE: Final = "@@@temperature@@@"
    MAX_NEW_TOKENS: Final = "@@@max_new_tokens@@@"
    SEED: Final = "@@@seed@@@"
    SYSTEM_PROMPT: Final = "@@@system_prompt@@@"

    @staticmethod
    def merge(*options: dict[str, Any] | None) -> dict[str, Any]:
        """Merge option mappings left to right; later keys win, ``None`` is skipped."""
        merged: dict[str, Any] = {}
        for opts in options:
            if opts:
                merged.update(opts)
        return merged
