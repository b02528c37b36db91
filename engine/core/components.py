"""What a backend generates from: content blocks, instructions, chat messages, queries and
transformations, and the ``{{name}}`` template filling the session methods apply.

Components are immutable attrs values. Anything with ``format_for_llm() -> str`` is a
:class:`Component`, so users can bring their own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import attrs

if TYPE_CHECKING:
    from engine.core.thunk import ModelOutputThunk

__all__ = [
    "CBlock",
    "Component",
    "Instruction",
    "Message",
    "MissingUserVariableError",
    "Query",
    "Transform",
    "fill_user_variables",
    "text_of",
]


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
    """One chat message.

    A reply from ``Session.achat`` carries the generation that produced it in ``thunk``
    (its ``generation`` holds timings and usage; with ``format=`` its ``parsed_repr`` holds
    the parsed value). ``thunk`` takes no part in equality or ``repr``.
    """

    role: Role
    content: str
    thunk: ModelOutputThunk[Any] | None = attrs.field(default=None, kw_only=True, eq=False, repr=False)

    def format_for_llm(self) -> str:
        """The message's content."""
        return self.content

    def __str__(self) -> str:
        # As Mellea prints a message (it has no __str__ of its own, so print() shows its repr).
        return f'Message(role="{self.role}", content="{self.content}")'


def text_of(obj: object) -> str:
    """The text an object shows the model: ``format_for_llm()`` if it has one, else ``str()``."""
    render = getattr(obj, "format_for_llm", None)
    if callable(render):
        return str(render())
    return str(obj)


@attrs.frozen
class Query:
    """A question about an object: the object's text, then the question."""

    obj: Any
    query: str

    def format_for_llm(self) -> str:
        """The object's text and the question."""
        return f"{text_of(self.obj)}\n\nAnswer this question about the text above:\n{self.query}"


@attrs.frozen
class Transform:
    """A rewrite of an object: the object's text, then how to transform it."""

    obj: Any
    transformation: str

    def format_for_llm(self) -> str:
        """The object's text and the transformation; the model answers with the result only."""
        return (
            f"{text_of(self.obj)}\n\nTransform the text above as follows and answer with the "
            f"transformed text only:\n{self.transformation}"
        )


_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class MissingUserVariableError(KeyError):
    """A ``{{name}}`` placeholder has no value in ``user_variables``."""

    def __str__(self) -> str:
        return str(self.args[0])


def fill_user_variables(text: str, user_variables: Mapping[str, Any] | None) -> str:
    """Replace every ``{{name}}`` in *text* with ``str(user_variables[name])``.

    With ``user_variables=None`` the text is returned unchanged (so prompts may contain
    literal braces). A placeholder without a value is a :class:`MissingUserVariableError`
    (a ``KeyError``) naming it.
    """
    if user_variables is None:
        return text
    missing = sorted({m.group(1) for m in _PLACEHOLDER.finditer(text)} - set(user_variables))
    if missing:
        names = ", ".join("{{" + name + "}}" for name in missing)
        raise MissingUserVariableError(
            f"no value for {names} in user_variables (it has {sorted(user_variables)!r}); "
            f"add {missing[0]!r} to user_variables or remove the placeholder"
        )
    return _PLACEHOLDER.sub(lambda m: str(user_variables[m.group(1)]), text)
