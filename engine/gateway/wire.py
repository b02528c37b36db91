"""OpenAI's chat-completions wire format: the request the gateway accepts, and what it answers.

Parsing is strict where a field changes the answer (a field the gateway cannot honour is
refused, never silently dropped) and lenient elsewhere (unknown fields are ignored, as
OpenAI-compatible servers do). Errors are :class:`RequestError` carrying OpenAI's error
shape, ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Mapping
from typing import Any

import attrs

from engine.core.components import Message
from engine.core.options import ModelOption

__all__ = [
    "ChatRequest",
    "RequestError",
    "chunk_frame",
    "completion_body",
    "done_frame",
    "error_body",
    "error_frame",
    "parse_chat_request",
]

REFUSED = {
    "tools": "tool calls are not supported by this gateway",
    "tool_choice": "tool calls are not supported by this gateway",
    "functions": "function calls are not supported by this gateway",
    "function_call": "function calls are not supported by this gateway",
    "response_format": "response_format is not supported: the gateway validates plain text",
    "logprobs": "logprobs are not supported by this gateway",
    "top_logprobs": "logprobs are not supported by this gateway",
}
"""Request fields the gateway refuses (400) when they ask for something: it cannot honour them."""

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
"""Message roles accepted, and the role each is sent upstream as."""


class RequestError(Exception):
    """A request the gateway answers with an error: *status* and OpenAI's error shape."""

    def __init__(
        self, status: int, message: str, *, type: str, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        """``{"error": {...}}``."""
        return error_body(self.message, type=self.type, code=self.code, param=self.param)


def error_body(
    message: str, *, type: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _invalid(message: str, param: str, code: str = "invalid_value") -> RequestError:
    return RequestError(400, message, type="invalid_request_error", code=code, param=param)


@attrs.frozen(kw_only=True)
class ChatRequest:
    """A checked ``POST /v1/chat/completions`` request."""

    model: str
    messages: tuple[Message, ...]
    stream: bool = False
    include_usage: bool = False
    model_options: Mapping[str, Any] = attrs.field(factory=dict)
    """``ModelOption`` keys: temperature, max tokens, stop sequences, seed."""


def parse_chat_request(body: Any, *, max_messages: int) -> ChatRequest:
    """Check a decoded request body; raise :class:`RequestError` (400) naming the field that is wrong."""
    if not isinstance(body, dict):
        raise _invalid("the request body must be a JSON object", "body", "invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model is required: the name of the model to use (GET /v1/models lists it)", "model")
    for field, why in REFUSED.items():
        value = body.get(field)
        if value is not None and value is not False and value != [] and value != {"type": "text"}:
            raise _invalid(why, field, "unsupported_parameter")
    n = body.get("n")
    if n is not None and n != 1:
        raise _invalid(
            f"n must be 1 (this gateway returns one choice), got {n!r}", "n", "unsupported_parameter"
        )
    messages = _messages(body.get("messages"), max_messages)
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _invalid(f"stream must be true or false, got {stream!r}", "stream")
    include_usage = False
    stream_options = body.get("stream_options")
    if stream_options is not None:
        if not isinstance(stream_options, dict):
            raise _invalid("stream_options must be an object", "stream_options")
        include_usage = stream_options.get("include_usage", False)
        if not isinstance(include_usage, bool):
            raise _invalid(
                "stream_options.include_usage must be true or false", "stream_options.include_usage"
            )
    return ChatRequest(
        model=model,
        messages=messages,
        stream=stream,
        include_usage=include_usage,
        model_options=_options(body),
    )


def _messages(value: Any, max_messages: int) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        raise _invalid("messages must be a non-empty array of {role, content} objects", "messages")
    if len(value) > max_messages:
        raise _invalid(
            f"too many messages: {len(value)}, the limit is {max_messages}", "messages", "too_many_messages"
        )
    out = []
    for i, item in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(item, dict):
            raise _invalid(f"{where} must be an object with role and content", where)
        role = item.get("role")
        if role not in ROLES:
            raise _invalid(
                f"{where}.role {role!r} is not supported; the roles are {', '.join(ROLES)}", f"{where}.role"
            )
        out.append(Message(ROLES[role], _content(item.get("content"), f"{where}.content")))  # type: ignore[arg-type]
    return tuple(out)


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content parts: text only
        texts = []
        for part in value:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise _invalid(
                    f"{where}: only text content parts are supported", where, "unsupported_content"
                )
            texts.append(part["text"])
        return "".join(texts)
    raise _invalid(f"{where} must be a string or an array of text parts", where)


def _options(body: Mapping[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    temperature = body.get("temperature")
    if temperature is not None:
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, (int, float))
            or not 0 <= temperature <= 2
        ):
            raise _invalid(f"temperature must be a number from 0 to 2, got {temperature!r}", "temperature")
        options[ModelOption.TEMPERATURE] = temperature
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _invalid(f"{field} must be a whole number >= 1, got {value!r}", field)
        options.setdefault(ModelOption.MAX_NEW_TOKENS, value)
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > 4:
            raise _invalid("stop must be a string or an array of at most 4 non-empty strings", "stop")
        if stops:
            options[ModelOption.STOP_SEQUENCES] = stops
    seed = body.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise _invalid(f"seed must be a whole number, got {seed!r}", "seed")
        options[ModelOption.SEED] = seed
    return options


# -- answers ------------------------------------------------------------------------------------------


def completion_id() -> str:
    """A new ``chatcmpl-...`` identifier."""
    return f"chatcmpl-{uuid.uuid4().hex}"


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def chunk_frame(
    ident: str,
    model: str,
    created: int,
    *,
    delta: Mapping[str, Any] | None = None,
    finish_reason: str | None = None,
    extension: Mapping[str, Any] | None = None,
    usage: Mapping[str, Any] | None = None,
) -> bytes:
    """One ``data: {chat.completion.chunk}`` event; ``delta=None`` with *usage* is the usage chunk
    (empty ``choices``), as OpenAI sends it."""
    obj: dict[str, Any] = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model}
    if delta is None and usage is not None:
        obj["choices"] = []
        obj["usage"] = dict(usage)
    else:
        obj["choices"] = [
            {"index": 0, "delta": dict(delta or {}), "logprobs": None, "finish_reason": finish_reason}
        ]
    if extension is not None:
        obj["rxllm"] = dict(extension)
    return f"data: {_dumps(obj)}\n\n".encode()


def error_frame(body: Mapping[str, Any]) -> bytes:
    """An error inside a stream that has started: ``data: {"error": {...}}``."""
    return f"data: {_dumps(body)}\n\n".encode()


def done_frame() -> bytes:
    """The stream's last event."""
    return b"data: [DONE]\n\n"


def completion_body(
    ident: str,
    model: str,
    created: int,
    *,
    text: str,
    finish_reason: str,
    usage: Mapping[str, Any] | None,
    extension: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The non-streaming answer, a ``chat.completion`` object."""
    obj: dict[str, Any] = {
        "id": ident,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
    }
    if usage is not None:
        obj["usage"] = dict(usage)
    if extension is not None:
        obj["rxllm"] = dict(extension)
    return obj


def now() -> int:
    """``created``: seconds since the epoch."""
    return math.floor(time.time())
