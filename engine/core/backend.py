"""The ``Backend`` protocol: anything that turns an action and a context into a thunk."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from engine.core.context import Context
    from engine.core.thunk import ModelOutputThunk

__all__ = ["Backend"]


@runtime_checkable
class Backend(Protocol):
    """A model server (or a simulator of one).

    ``generate_from_context`` starts the generation now (an asyncio task on the
    running loop) and returns at once with a lazy thunk and the new context, which is
    *ctx* with the action and the thunk appended. With
    ``model_options[ModelOption.STREAM]`` the thunk receives deltas as they arrive;
    without it, the whole output arrives as one delta.
    """

    async def generate_from_context(
        self,
        action: Any,
        ctx: Context,
        *,
        format: type | None = None,
        model_options: dict[str, Any] | None = None,
    ) -> tuple[ModelOutputThunk[Any], Context]:
        """Start generating a response to *action* given *ctx*."""
        ...
