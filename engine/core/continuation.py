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

__all__ = ["DEFAULT_REPAIR", "Continuation", "StreamRetry"]

DEFAULT_REPAIR = (
    "Note: your answer is checked while it is written. What you wrote next, {rejected!r}, was "
    "rejected: {reason}. Continue your answer from exactly where it stops, without repeating it, "
    "and make sure the rest meets every requirement."
)
"""The default repair instruction; ``{reason}`` and ``{rejected}`` are filled in."""


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
