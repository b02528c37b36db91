"""Immutable generation contexts, following Mellea's interface.

``add()`` returns a new context and never changes the one it is called on, so a
context can be shared between concurrent generations without locks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

__all__ = ["ChatContext", "Context", "SimpleContext"]


class Context(ABC):
    """An immutable sequence of turns: components, messages and model outputs."""

    __slots__ = ("_turns",)

    def __init__(self, turns: tuple[Any, ...] = ()) -> None:
        self._turns = tuple(turns)

    def add(self, turn: Any) -> Context:
        """Return a new context with *turn* appended (a component or a thunk)."""
        return self._with((*self._turns, turn))

    def as_list(self) -> list[Any]:
        """Every turn, oldest first."""
        return list(self._turns)

    def last_turn(self) -> Any | None:
        """The newest turn, or ``None`` when the context is empty."""
        return self._turns[-1] if self._turns else None

    def last_output(self) -> Any | None:
        """The newest model output (a ``ModelOutputThunk``) in the context, if any."""
        for turn in reversed(self._turns):
            if hasattr(turn, "is_computed") and hasattr(turn, "avalue"):
                return turn
        return None

    @abstractmethod
    def view_for_generation(self) -> list[Any]:
        """The earlier turns a backend sends along with the next action."""

    @abstractmethod
    def _with(self, turns: tuple[Any, ...]) -> Context: ...

    def __len__(self) -> int:
        return len(self._turns)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(turns={len(self._turns)})"


class SimpleContext(Context):
    """Keeps the history but sends none of it: every generation stands alone.

    Safe for concurrent async requests (the default for sessions).
    """

    __slots__ = ()

    def view_for_generation(self) -> list[Any]:
        """Nothing: a ``SimpleContext`` generation sees only its own action."""
        return []

    def _with(self, turns: tuple[Any, ...]) -> SimpleContext:
        return SimpleContext(turns)


class ChatContext(Context):
    """Sends the conversation so far, at most ``window_size`` turns of it."""

    __slots__ = ("window_size",)

    def __init__(self, turns: tuple[Any, ...] = (), *, window_size: int | None = None) -> None:
        if window_size is not None and window_size < 1:
            raise ValueError(
                f"ChatContext window_size must be a positive number of turns or None, got {window_size!r}"
            )
        super().__init__(turns)
        self.window_size = window_size

    def view_for_generation(self) -> list[Any]:
        """The last ``window_size`` turns (all of them when it is ``None``)."""
        turns = list(self._turns)
        return turns if self.window_size is None else turns[-self.window_size :]

    def _with(self, turns: tuple[Any, ...]) -> ChatContext:
        return ChatContext(turns, window_size=self.window_size)
