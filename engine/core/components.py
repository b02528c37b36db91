"""What a backend generates from: content blocks, instructions and chat messages.

Components are immutable attrs values. Anything with ``format_for_llm() -> str`` is a
:class:`Component`, so users can bring their own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, Protocol, runtime_checkable

import attrs

__all__ = ["CBlock", "Component", "Instruction", "Message"]


@runtime_checkable
class Component(Protocol):
    """Something that can be rendered as the text of one turn sent to a model."""

    def format_for_llm(self) -> str:
        """The text a backend sends for this component."""
        ...


@attrs.frozen
class CBlock:
    """A plain block of text."""

    value: str

    def format_for_llm(self) -> str:
        """The block's text, unchanged."""
        return self.value

    def __str__(self) -> str:
        return self.value


def _as_tuple(items: Iterable[object]) -> tuple[object, ...]:
    return tuple(items)


@attrs.frozen
class Instruction:
    """An instruction to the model, with the requirements its output should meet.

    ``requirements`` are rendered into the prompt (their ``format_for_llm()``), so the
    model sees them as well as the validators.
    """

    description: str
    requirements: tuple[object, ...] = attrs.field(default=(), converter=_as_tuple)

    def format_for_llm(self) -> str:
        """The description, followed by one line per requirement."""
        lines = [self.description]
        rendered = [req.format_for_llm() for req in self.requirements if hasattr(req, "format_for_llm")]
        rendered = [r for r in rendered if r]
        if rendered:
            lines.append("")
            lines.append("Requirements:")
            lines.extend(f"- {r}" for r in rendered)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format_for_llm()


Role = Literal["system", "user", "assistant", "tool"]


@attrs.frozen
class Message:
    """One chat message."""

    role: Role
    content: str

    def format_for_llm(self) -> str:
        """The message's content."""
        return self.content

    def __str__(self) -> str:
        return self.content
