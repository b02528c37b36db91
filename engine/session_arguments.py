"""The arguments the session's methods share: the default strategy, the checks every
generating method runs before anything is sent, and the descriptions its errors give."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from engine.core import arguments, typed_output
from engine.core.components import CBlock
from engine.core.requirements import Requirement
from engine.core.typed_output import OutputFormat
from engine.sampling import SamplingStrategy

__all__ = [
    "BACKEND_ALLOWED",
    "CONTEXT_ALLOWED",
    "DEFAULT_STRATEGY",
    "DefaultStrategy",
    "Requirements",
    "StrategyArg",
    "as_component",
    "check_format",
    "check_options",
    "require_text",
]


class DefaultStrategy:
    """Sentinel type for "the default sampling strategy" (``RejectionSamplingStrategy(loop_budget=2)``)."""

    _instance: DefaultStrategy | None = None

    def __new__(cls) -> DefaultStrategy:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "RejectionSamplingStrategy(loop_budget=2)"


DEFAULT_STRATEGY: Final = DefaultStrategy()
"""The default of ``strategy=``: a fresh ``RejectionSamplingStrategy(loop_budget=2)`` per call."""

StrategyArg = SamplingStrategy | DefaultStrategy | None
Requirements = Sequence[Requirement | str] | None


def require_text(text: str, what: str, method: str) -> None:
    """Refuse an empty (or blank) prompt before anything is sent."""
    if not text.strip():
        raise ValueError(
            f"{method}() got an empty {what}: there is nothing to send to the model; pass the text to ask"
        )


def as_component(action: Any, method: str) -> Any:
    """*action* as a component: a ``str`` becomes a ``CBlock``; anything else must be a component."""
    if isinstance(action, str):
        return CBlock(action)
    return arguments.component("action", action)


BACKEND_ALLOWED = "a backend (an object with an async generate_from_context())"
CONTEXT_ALLOWED = "a Context (e.g. SimpleContext() or ChatContext()), or None"


def check_format(format: OutputFormat) -> None:
    """A format that is no output type fails before the request."""
    if format is not None:
        typed_output.json_schema(format)


def check_options(
    strategy: Any, return_sampling_results: Any, await_result: Any, format: Any, model_options: Any
) -> None:
    """The arguments every generating method shares, checked before anything is sent."""
    if strategy is not None and not isinstance(strategy, DefaultStrategy):
        arguments.has_method(
            "strategy",
            strategy,
            "sample",
            "a SamplingStrategy (e.g. RejectionSamplingStrategy(loop_budget=2)), or None for the lazy thunk",
        )
    arguments.flag("return_sampling_results", return_sampling_results)
    arguments.flag("await_result", await_result)
    check_format(format)
    arguments.optional_mapping("model_options", model_options)
