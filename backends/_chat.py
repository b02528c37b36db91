"""Chat messages and schemas for a request: what the HTTP backends send, whatever their wire format.

:func:`chat_messages` turns an action and its context into the ``messages`` list every chat
API takes (a :class:`~engine.core.continuation.Continuation` ends it with the partial
answer to continue); :func:`json_schema_for` is the JSON schema sent for ``format=``.
"""

from __future__ import annotations

from typing import Any

from engine.core.components import Message
from engine.core.context import Context
from engine.core.continuation import Continuation, JsonContinuation
from engine.core.thunk import ModelOutputThunk

__all__ = ["chat_messages", "continuation_messages", "json_schema_for"]


def chat_messages(action: Any, ctx: Context, system_prompt: Any = None) -> list[dict[str, str]]:
    """The chat ``messages`` for *action* after *ctx*'s generation view.

    ``Message`` keeps its role; a ``ModelOutputThunk`` is an assistant turn (its text
    so far); any other component (``format_for_llm()``) or string is a user turn. A
    :class:`~engine.core.continuation.Continuation` is its action's turn followed by a
    trailing assistant message holding the partial answer (see :func:`continuation_messages`);
    a :class:`~engine.core.continuation.JsonContinuation` is its action's turn with the
    instruction appended, which the server answers with a new document.
    """
    messages: list[dict[str, str]] = []
    if system_prompt:
        messages.append({"role": "system", "content": str(system_prompt)})
    for turn in [*ctx.view_for_generation(), action]:
        if isinstance(turn, Continuation):
            messages.extend(continuation_messages(turn))
        elif isinstance(turn, JsonContinuation):  # a new document: no partial answer to continue
            messages.extend(_with_repair(turn.action, turn.repair))
        else:
            messages.append(_message(turn))
    return messages


def continuation_messages(turn: Continuation) -> list[dict[str, str]]:
    """The action's turn, with the repair instruction appended to it, then the partial answer.

    The instruction goes into the user turn (a new user turn after a non-user action),
    never after the assistant message, so the answer stays the last message and the
    server continues it; a system message mid-conversation would break chat templates
    that accept one only first.
    """
    messages = _with_repair(turn.action, turn.repair)
    messages.append({"role": "assistant", "content": turn.prefix})
    return messages


def _with_repair(action: Any, repair: str | None) -> list[dict[str, str]]:
    """The action's turn with *repair* appended to it (a new user turn after a non-user action)."""
    messages = [_message(action)]
    if repair:
        last = messages[-1]
        if last["role"] == "user":
            messages[-1] = {"role": "user", "content": f"{last['content']}\n\n{repair}"}
        else:
            messages.append({"role": "user", "content": repair})
    return messages


def _message(turn: Any) -> dict[str, str]:
    if isinstance(turn, Message):
        return {"role": turn.role, "content": turn.content}
    if isinstance(turn, ModelOutputThunk):
        return {"role": "assistant", "content": turn.text}
    if isinstance(turn, str):
        return {"role": "user", "content": turn}
    render = getattr(turn, "format_for_llm", None)
    if callable(render):
        return {"role": "user", "content": str(render())}
    raise TypeError(
        f"cannot send a {type(turn).__name__} to a chat model: pass a str, a Message, or a component "
        f"with format_for_llm()"
    )


def json_schema_for(format: Any) -> dict[str, Any]:
    """The JSON schema to send for a structured-output *format* (any type ``format=`` accepts, or a
    JSON-schema dict); :mod:`engine.core.typed_output` decides, and imports pydantic on first use."""
    from engine.core import typed_output

    return typed_output.json_schema(format)
