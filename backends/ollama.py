"""``OllamaBackend``: Ollama's ``POST /api/chat``, streaming (NDJSON) or not.

Wire format (Ollama ``docs/api.md``): the request is
``{"model", "messages", "stream", "options", ...}``; a streaming answer is one JSON
object per line, ``{"message": {"role": "assistant", "content": "..."}, "done": false}``,
ending with a ``"done": true`` object that carries ``done_reason``,
``prompt_eval_count``, ``eval_count`` and the durations; a non-streaming answer is
that final object with the whole message. Errors are ``{"error": "..."}``, as the
body of an error status or as a line inside a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any, Unpack
from urllib.parse import urlsplit

from backends._chat import json_schema_for
from backends._http import HttpBackend, HttpOptions
from backends._parser import StreamParser
from backends.errors import BackendUnreachableError, MalformedStreamError, redact_url
from backends.model_list import ListedModel, get_listing
from backends.sse import LineSplitter, LineTooLongError
from engine.core.context import Context
from engine.core.generation import GenerationInfo
from engine.core.options import ModelOption

__all__ = ["OllamaBackend", "ollama_base_url"]

logger = logging.getLogger(__name__)

DEFAULT_PORT = 11434

_OPTIONS = {
    ModelOption.TEMPERATURE: "temperature",
    ModelOption.MAX_NEW_TOKENS: "num_predict",
    ModelOption.SEED: "seed",
    ModelOption.CONTEXT_WINDOW: "num_ctx",
    ModelOption.STOP_SEQUENCES: "stop",
}
_TOP_LEVEL = frozenset({"format", "keep_alive", "think", "tools"})
"""Non-sentinel keys that are request fields rather than entries of ``options``."""

_DURATIONS = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")


def ollama_base_url(value: str | None = None) -> str:
    """The server URL for an ``OLLAMA_HOST``-style *value*, read the way Ollama's client reads it.

    ``"host"``, ``"host:port"``, ``":port"``, ``"http://host:port"`` and ``"https://host"``
    all work; without a scheme the default is ``http`` and port 11434; empty or
    ``None`` means ``http://127.0.0.1:11434``.
    """
    text = (value or "").strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest, default_port = "http", text, DEFAULT_PORT
    else:
        default_port = 443 if scheme == "https" else 80
    hostport, _, path = rest.partition("/")
    parts = urlsplit(f"//{hostport}")
    host = parts.hostname or "127.0.0.1"
    try:
        port = parts.port or default_port
    except ValueError:
        raise ValueError(
            f"OLLAMA_HOST={value!r} has an invalid port; use host:port, e.g. 127.0.0.1:11434"
        ) from None
    if ":" in host:
        host = f"[{host}]"
    base = f"{scheme}://{host}:{port}"
    return f"{base}/{path.strip('/')}" if path.strip("/") else base


class OllamaBackend(HttpBackend):
    """Generates with a model served by Ollama.

    *base_url* defaults to ``OLLAMA_HOST``, else ``http://localhost:11434``.
    *model_options* are defaults merged under each call's options:
    ``ModelOption.TEMPERATURE``, ``MAX_NEW_TOKENS`` (``num_predict``) and ``SEED`` map
    to Ollama options, ``SYSTEM_PROMPT`` becomes a system message, and any other
    (non-sentinel) key passes through: into ``options`` (``top_k``, ``num_ctx``, ...)
    or, for ``format``, ``keep_alive``, ``think`` and ``tools``, into the request.
    See :class:`~backends._http.HttpBackend` for the timeouts and pooling.

    A :class:`~engine.core.continuation.Continuation` (an in-stream retry) ends the
    messages with the partial answer as an assistant message, which Ollama continues.
    """

    provider = "ollama"
    provider_name = "Ollama"

    def __init__(
        self,
        model_id: str,
        *,
        base_url: str | None = None,
        model_options: Mapping[str, Any] | None = None,
        **options: Unpack[HttpOptions],
    ) -> None:
        if base_url is None:
            base_url = ollama_base_url(os.environ.get("OLLAMA_HOST"))
        super().__init__(
            model_id,
            base_url=base_url,
            model_options=model_options,
            **options,
        )

    def _request(
        self, action: Any, ctx: Context, options: dict[str, Any], format: type | None, stream: bool
    ) -> tuple[str, dict[str, Any]]:
        body = self._chat_body(action, ctx, options, stream)
        ollama_options: dict[str, Any] = {}
        for key, value in self._wire_options(options, _OPTIONS).items():
            (body if key in _TOP_LEVEL else ollama_options)[key] = value
        if ollama_options:
            body["options"] = ollama_options
        if format is not None:
            body["format"] = json_schema_for(format)
        return f"{self._root}/api/chat", body

    def _parser(self, url: str, generation: GenerationInfo, stream: bool) -> StreamParser:
        return _OllamaParser(self, url, generation, stream)

    async def list_models(self) -> list[ListedModel]:
        """The models pulled on the server (``GET /api/tags``), in its order; ``created`` is when
        each was last modified, ``owned_by`` is ``None`` (Ollama does not say).

        Raises a :class:`~backends.errors.BackendError` as a generation does, or
        :class:`~backends.errors.MalformedStreamError` for an answer that is not
        ``{"models": [{"name": ...}, ...]}``.
        """
        url = f"{self._root}/api/tags"
        document = await get_listing(self, url)
        items = document.get("models") if isinstance(document, dict) else None
        if not isinstance(items, list) or not all(
            isinstance(item, dict) and isinstance(item.get("name"), str) for item in items
        ):
            quoted = self.shown_text(json.dumps(document)[:1000])
            raise MalformedStreamError(
                f"Ollama at {redact_url(url)} answered a model listing without a list of "
                f'{{"name": ...}} objects under "models": {quoted!r}.',
                line=quoted,
                url=url,
                provider=self.provider,
            )
        return [ListedModel(item["name"], created=_unix_seconds(item.get("modified_at"))) for item in items]

    def hint_unreachable(self) -> str:
        """Tell the user to start Ollama or point the backend elsewhere."""
        return (
            "Is `ollama serve` running? Set OLLAMA_HOST or pass base_url= to use another server, "
            "or use ScriptedBackend to run without one."
        )

    async def check_reachable(self) -> None:
        """Open (and close) a TCP connection to the server; ``BackendUnreachableError`` if it fails.

        A session runs it before its first request, so an Ollama that is not running is
        reported by that call, not carried by a lazy thunk that looks like a success.
        """
        parts = urlsplit(self.base_url)
        host = parts.hostname or "localhost"
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), timeout=self.connect_timeout or 10.0
            )
        except (OSError, TimeoutError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise BackendUnreachableError(
                f"Cannot reach Ollama at {self.base_url} ({reason}). {self.hint_unreachable()}",
                url=self.base_url,
                provider=self.provider,
            ) from exc
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    def hint_model_not_found(self) -> str:
        """Tell the user to pull the model."""
        return f"Run `ollama pull {self.model_id}` (or `ollama list` to see the models you have)."

    def hint_auth(self) -> str:
        """Ollama has no keys: a proxy in front of it refused the request."""
        return (
            "Ollama itself needs no key: a proxy in front of it refused the request; check its credentials."
        )

    @property
    def endpoint_kind(self) -> str:
        """Ollama's chat API."""
        return "an Ollama API (/api/chat)"

    def is_model_not_found(self, status: int, server_message: str) -> bool:
        """Ollama answers 404 ``model "x" not found, try pulling it first``."""
        lowered = server_message.lower()
        return status == 404 and "model" in lowered and "not found" in lowered


def _unix_seconds(stamp: Any) -> int | None:
    """Ollama's RFC 3339 time (with nanoseconds) in whole Unix seconds; ``None`` if unreadable."""
    try:
        return int(datetime.datetime.fromisoformat(stamp).timestamp()) if isinstance(stamp, str) else None
    except ValueError:
        return None


class _OllamaParser(StreamParser):
    def __init__(self, backend: HttpBackend, url: str, generation: GenerationInfo, stream: bool) -> None:
        super().__init__(backend, url, generation, stream)
        self.lines = LineSplitter(max_line_bytes=self.max_frame_bytes)

    def _feed(self, data: bytes, out: list[str]) -> None:
        try:
            lines = self.lines.feed(data)
        except LineTooLongError as exc:
            raise self.too_large(exc.what, exc.limit, exc.head) from None
        for line in lines:
            text = self._line(line)
            if text:
                out.append(text)
                self.kept += 1

    def _close_whole(self, document: Any) -> Iterator[str]:
        yield self._object(document, self.head)
        if not self.done:
            raise self.incomplete("sent a response without `done: true`")

    def _close(self) -> Iterator[str]:
        rest = self.lines.close()
        if rest is not None:
            yield self._line(rest)
        if not self.done:
            raise self.incomplete("ended the stream")

    def _line(self, line: bytes | bytearray) -> str:
        if not line or line.isspace():
            return ""
        try:
            obj = json.loads(line)
        except ValueError:
            raise self.malformed("a line that is not JSON", line) from None
        return self._object(obj, line)

    def _object(self, obj: Any, line: bytes | bytearray) -> str:
        """The delta of one parsed line (or whole body) *obj*; *line* is its text, to quote in errors."""
        if not isinstance(obj, dict):
            raise self.malformed("a line that is not a JSON object", line)
        if "error" in obj:
            raise self.stream_error(str(obj["error"]))
        if self.done:
            return ""  # nothing follows the final object
        self.frames += 1
        message = obj.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if content is not None and not isinstance(content, str):
            raise self.malformed("a message whose content is not a string", line)
        if isinstance(message, dict) and isinstance(message.get("thinking"), str):
            self.generation.extra["thinking"] = (
                self.generation.extra.get("thinking", "") + message["thinking"]
            )
        if obj.get("done") is True:
            self.done = True
            self._finish(obj)
        elif "done" not in obj and message is None:
            raise self.malformed("a line that is neither a message nor the final object", line)
        return content or ""

    def _finish(self, obj: dict[str, Any]) -> None:
        generation = self.generation
        generation.done_reason = str(obj.get("done_reason") or "stop")
        usage = generation.usage
        for key, alias in (("prompt_eval_count", "prompt_tokens"), ("eval_count", "completion_tokens")):
            value = obj.get(key)
            if isinstance(value, int):
                usage[key] = value
                usage[alias] = value
        if "prompt_tokens" in usage and "completion_tokens" in usage:
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        for key in _DURATIONS:
            if isinstance(obj.get(key), int):
                generation.extra[key] = obj[key]
        if isinstance(obj.get("model"), str):
            generation.extra["response_model"] = obj["model"]
