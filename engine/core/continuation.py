"""In-stream retries: the policy (:class:`StreamRetry`) and what a backend sees (:class:`Continuation`).

When a chunk fails in a run with ``retry=StreamRetry(...)``, the failing chunk is
withheld, its generation cancelled, and a new generation continues the answer from the
delivered text. The engine asks the backend for it with a :class:`Continuation` as the
action: the original action, the delivered text as the start of the assistant's
answer, and a short repair instruction. HTTP backends render it as the action's user
turn (with the instruction appended) followed by a trailing assistant message that the
server continues; other backends see ``format_for_llm()``.
"""

from __future__ import annotations

from typing import Any

import attrs

from engine.core import arguments

__all__ = ["DEFAULT_REPAIR", "JSON_RESTART", "JSON_RESUME", "Continuation", "JsonContinuation", "StreamRetry"]

DEFAULT_REPAIR = (
    "Note: your answer is checked while it is written. What you wrote next, {rejected!r}, was "
    "rejected: {reason}. Continue your answer from exactly where it stops, without repeating it, "
    "and make sure the rest meets every requirement."
)
"""The default repair instruction; ``{reason}`` and ``{rejected}`` are filled in."""

JSON_RESUME = (
    "Note: your answer is checked while it is written. The first {kept} items of {array} (indices 0 "
    "to {last}) were accepted and kept; the next one, {rejected!r}, was rejected: {reason}. Write a new "
    "JSON document of the same shape whose {array} holds only the items from index {kept} on: they are "
    "appended after the kept ones, so do not repeat those. Make sure every item meets every requirement."
)
"""The instruction of a retry that asks a JSON answer for the items after the delivered ones
(:class:`JsonContinuation`); ``{kept}``, ``{last}``, ``{array}``, ``{rejected}`` and ``{reason}``
are filled in."""

JSON_RESTART = (
    "Note: your answer is checked while it is written. Its start, {rejected!r}, was rejected: {reason}. "
    "Write a new JSON document of the same shape, and make sure every value meets every requirement."
)
"""The instruction of a retry of a JSON answer of which nothing was delivered; ``{rejected}`` and
``{reason}`` are filled in."""


def _attempts(_: Any, __: Any, value: Any) -> None:
    # It counts every generation, the first included: 1 means never retry.
    arguments.whole_number("StreamRetry max_attempts (generations, the first included)", value, minimum=1)


def _template(_: Any, __: Any, value: Any) -> None:
    arguments.text("StreamRetry repair (a format string with {reason} and {rejected})", value)
    try:
        value.format(reason="", rejected="")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"StreamRetry repair {value!r} is not a valid template ({exc!r}); it may use only the "
            "fields {reason} and {rejected} (double any other braces: {{ }})"
        ) from None


@attrs.frozen
class StreamRetry:
    """How a streaming run retries a failing chunk without taking back what it delivered.

    *max_attempts* counts the generations of the run, the first included (1: never
    retry). *repair* is the instruction given to the model for each new attempt, a
    format string with ``{reason}`` (why the chunk failed) and ``{rejected}`` (the
    rejected chunk's text). A failure whose result says ``retryable=False`` is never
    retried.
    """

    max_attempts: int = attrs.field(default=3, validator=_attempts)
    repair: str = attrs.field(default=DEFAULT_REPAIR, validator=_template)

    def repair_instruction(self, reason: str, rejected: str) -> str:
        """The repair instruction for a chunk *rejected* because of *reason*."""
        return self.repair.format(reason=reason, rejected=rejected)

    def json_instruction(self, reason: str, rejected: str, array: str | None, kept: int) -> str:
        """The instruction of a retry of a JSON answer (:class:`JsonContinuation`): the items of
        the array at *array* from index *kept* on (:data:`JSON_RESUME`), or with nothing kept
        (*array* ``None``) a whole new document (:data:`JSON_RESTART`). *repair* is for text
        continuations: a JSON retry asks for a new document, not for the rest of the text."""
        if array is None:
            return JSON_RESTART.format(reason=reason, rejected=rejected)
        return JSON_RESUME.format(reason=reason, rejected=rejected, array=array, kept=kept, last=kept - 1)


@attrs.frozen
class Continuation:
    """Continue the assistant's partial answer *prefix* to *action* (attempt *attempt* of a run).

    *repair* is the instruction for the model (why the previous attempt's next chunk was
    rejected). Backends that can continue a trailing assistant message render
    *action* (with *repair* appended to its user turn) followed by an assistant message
    holding *prefix*; the generated text is what comes after *prefix*.
    """

    action: Any
    prefix: str
    repair: str | None = None
    attempt: int = 2

    def format_for_llm(self) -> str:
        """One user turn, for backends that cannot continue an assistant message."""
        render = getattr(self.action, "format_for_llm", None)
        lines = [str(render()) if callable(render) else str(self.action)]
        if self.repair:
            lines += ["", self.repair]
        lines += [
            "",
            "Your answer so far (write only what comes next, without repeating it):",
            self.prefix,
        ]
        return "\n".join(lines)


@attrs.frozen
class JsonContinuation:
    """A retry of a JSON answer to *action*: a new document, asked for with *repair* (attempt *attempt*).

    A schema-constrained server cannot continue a JSON document (it starts a new one), so a
    retry of a run with JSON chunking does not hand the server the delivered text: *repair*
    (see :meth:`StreamRetry.json_instruction`) asks for the items after the delivered ones,
    and the engine splices the new document's items after them
    (:mod:`operators.chunking.json_splice`). Backends render *action*'s turn with *repair*
    appended to it, and the server answers it as a new turn.
    """

    action: Any
    repair: str
    attempt: int = 2

    def format_for_llm(self) -> str:
        """One user turn: the action, then the instruction."""
        render = getattr(self.action, "format_for_llm", None)
        return "\n".join([str(render()) if callable(render) else str(self.action), "", self.repair])
