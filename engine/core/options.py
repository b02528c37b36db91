"""Model options understood by every backend.

The names and values are Mellea's (0.7 and 0.8), so ``model_options={ModelOption.THINKING:
True}`` written for Mellea runs here. Most keys are sentinel strings (``"@@@stream@@@"``)
that never collide with a provider's own option names, which backends pass through
unchanged; ``TEMPERATURE`` is the plain ``"temperature"`` that every provider uses, so
``{"temperature": 0}`` and ``{ModelOption.TEMPERATURE: 0}`` are one and the same key. A
backend that cannot honour an option logs a warning naming it, once
(:meth:`ModelOption.warn_ignored`).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Final

__all__ = ["ModelOption"]

logger = logging.getLogger(__name__)

_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


class ModelOption:
    """Keys for the ``model_options`` mapping passed to a backend."""

    STREAM: Final = "@@@stream@@@"
    """Stream the output: the thunk receives deltas as the server sends them."""
    TEMPERATURE: Final = "temperature"
    """Sampling temperature: the provider's own name, as in Mellea."""
    MAX_NEW_TOKENS: Final = "@@@max_new_tokens@@@"
    SEED: Final = "@@@seed@@@"
    SYSTEM_PROMPT: Final = "@@@system_prompt@@@"
    CONTEXT_WINDOW: Final = "@@@context_window@@@"
    """The context length to run the model with (Ollama's ``num_ctx``)."""
    STOP_SEQUENCES: Final = "@@@stop_sequences@@@"
    """Strings that end the generation (``stop``)."""
    THINKING: Final = "@@@thinking@@@"
    """Let a reasoning model think before it answers (Mellea's option; no backend here honours it yet)."""
    TOOLS: Final = "@@@tools@@@"
    """Tools the model may call (Mellea's option; no backend here honours it yet)."""

    @staticmethod
    def merge(*options: dict[str, Any] | None) -> dict[str, Any]:
        """Merge option mappings left to right; later keys win, ``None`` is skipped."""
        merged: dict[str, Any] = {}
        for opts in options:
            if opts:
                merged.update(opts)
        return merged

    @staticmethod
    def name_of(key: str) -> str:
        """``"ModelOption.SEED"`` for ``ModelOption.SEED``'s key; an unknown key as it is."""
        for name, value in vars(ModelOption).items():
            if value == key and name.isupper():
                return f"ModelOption.{name}"
        return repr(key)

    @staticmethod
    def warn_ignored(key: str, backend: str) -> None:
        """Log a WARNING, once per process for each *backend* name and option, that *backend*
        cannot honour the option *key* and sends the request without it."""
        with _warned_lock:
            if (backend, key) in _warned:
                return
            _warned.add((backend, key))
        logger.warning(
            "%s cannot honour model option %s; it is left out of the request",
            backend,
            ModelOption.name_of(key),
        )
