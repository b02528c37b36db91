"""``OpenAIBackend``: ``POST {base_url}/chat/completions`` on any OpenAI-compatible server.

Works with OpenAI, vLLM, llama.cpp's server (and llama-cpp-python's), LM Studio and
others. Streaming requests send ``stream: true`` with
``stream_options: {"include_usage": true}`` and read server-sent events
(:class:`~backends.sse.SSEDecoder`): each ``data:`` event is a
``chat.completion.chunk`` whose ``choices[0].delta.content`` is the next delta; the
chunk with ``finish_reason`` gives the done reason; with ``include_usage`` a last
chunk with empty ``choices`` carries ``usage``; ``data: [DONE]`` ends the stream.
A stream that closes after its ``finish_reason`` chunk without ``[DONE]`` is complete
(as the official client treats it); one that closes before any ``finish_reason`` is
incomplete. Errors are ``{"error": {"message": ...}}``.

The API key (argument, else ``OPENAI_API_KEY``) is sent as a bearer token only; it
never appears in ``repr()``, log records or error messages (server text that echoes
it is redacted).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal, Unpack

from backends._chat import json_schema_for
from backends._failures import Secrets
from backends._http import HttpBackend, HttpOptions
from backends._parser import StreamParser
from backends.credentials import clean_api_key
from backends.errors import BackendError, BadRequestError, MalformedStreamError, ServerError, redact_url
from backends.model_list import ListedModel, get_listing
from backends.sse import LineTooLongError, SSEDecoder, SSEEvent
from engine.core.context import Context
from engine.core.continuation import Continuation
from engine.core.generation import GenerationInfo
from engine.core.options import ModelOption

__all__ = ["OpenAIBackend"]

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"

VLLM_CONTINUE = {"continue_final_message": True, "add_generation_prompt": False}
"""vLLM's request fields to continue the final assistant message instead of starting a new one."""

_REFUSED_FORM = re.compile(r"json_schema|response_format", re.IGNORECASE)
"""What a server's refusal of the ``json_schema`` form names (llama-cpp-python's server answers
500 "... response_format.type Input should be 'text' or 'json_object' ... input_value='json_schema'")."""

_DECODER = json.JSONDecoder()

_OPTIONS = {
    ModelOption.TEMPERATURE: "temperature",
    ModelOption.MAX_NEW_TOKENS: "max_tokens",
    ModelOption.SEED: "seed",
    ModelOption.STOP_SEQUENCES: "stop",
}


class OpenAIBackend(HttpBackend):
    """Generates with an OpenAI-compatible chat-completions server.

    *base_url* is the API root including its version path (``http://127.0.0.1:8000/v1``);
    it defaults to ``OPENAI_BASE_URL``, else ``https://api.openai.com/v1``. *api_key*
    defaults to ``OPENAI_API_KEY``; local servers usually need none.
    ``ModelOption.TEMPERATURE``, ``MAX_NEW_TOKENS`` (``max_tokens``) and ``SEED`` map to
    request fields, ``SYSTEM_PROMPT`` becomes a system message, and other non-sentinel
    keys (``top_p``, ``stop``, ``logit_bias``, ...) pass through into the request.
    ``include_usage=False`` leaves out ``stream_options`` for servers that reject it.
    ``format=`` is sent as ``response_format={"type": "json_schema", ...}``. With the default
    ``response_format_type="auto"``, a server that refuses that form before any delta (an error
    answer naming ``json_schema`` or ``response_format``, as llama-cpp-python's server answers)
    gets the request once more with the schema as ``{"type": "json_object", "schema": ...}``, and
    this backend sends that form from then on (logged at INFO). ``"json_schema"`` or
    ``"json_object"`` sends only that form, without falling back.
    See :class:`~backends._http.HttpBackend` for the timeouts and pooling.

    A :class:`~engine.core.continuation.Continuation` (an in-stream retry) is sent as
    the action's user turn followed by the partial answer as the final assistant
    message, plus *continue_fields*: by default vLLM's ``continue_final_message: true``
    and ``add_generation_prompt: false`` (llama.cpp's server continues a trailing
    assistant message by itself and ignores them; llama-cpp-python's server ignores them
    and starts a new turn), and none for OpenAI's own API,
    which has no such option and rejects unknown fields. Pass ``continue_fields={}``
    for another server that rejects them.
    """

    provider = "openai"
    provider_name = "OpenAI-compatible server"

    def __init__(
        self,
        model_id: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        model_options: Mapping[str, Any] | None = None,
        include_usage: bool = True,
        response_format_type: Literal["auto", "json_schema", "json_object"] = "auto",
        continue_fields: Mapping[str, Any] | None = None,
        **options: Unpack[HttpOptions],
    ) -> None:
        if base_url is None:
            base_url = os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        super().__init__(
            model_id,
            base_url=base_url,
            model_options=model_options,
            **options,
        )
        key = os.environ.get("OPENAI_API_KEY") if api_key is None else api_key
        source = "$OPENAI_API_KEY" if api_key is None else "api_key="
        self._api_key = (clean_api_key(key, source) if key else "") or None
        if self._api_key:
            if self._secrets.forms:
                raise ValueError(
                    f"OpenAIBackend got both credentials in base_url ({self.base_url}) and an api_key; they "
                    "would both go in the Authorization header: pass one of them"
                )
            self._secrets = Secrets.of(api_key=self._api_key)
        self.include_usage = include_usage
        if response_format_type not in ("auto", "json_schema", "json_object"):
            raise ValueError(
                f"response_format_type must be 'auto', 'json_schema' or 'json_object', got "
                f"{response_format_type!r}"
            )
        self.response_format_type = response_format_type
        self._schema_form = "json_object" if response_format_type == "json_object" else "json_schema"
        if continue_fields is None:
            continue_fields = {} if self.base_url.startswith("https://api.openai.com") else VLLM_CONTINUE
        self.continue_fields = dict(continue_fields)

    @property
    def has_api_key(self) -> bool:
        """Whether requests carry an API key (the key itself is not readable through the API)."""
        return bool(self._api_key)

    def _headers(self, stream: bool) -> dict[str, str]:
        headers = super()._headers(stream)
        headers["Accept"] = "text/event-stream" if stream else "application/json"
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _request(
        self, action: Any, ctx: Context, options: dict[str, Any], format: type | None, stream: bool
    ) -> tuple[str, dict[str, Any]]:
        body = self._chat_body(action, ctx, options, stream)
        if stream and self.include_usage:
            body["stream_options"] = {"include_usage": True}
        if isinstance(action, Continuation):
            body.update(self.continue_fields)
        body.update(self._wire_options(options, _OPTIONS))
        if format is not None:
            from engine.core import typed_output

            schema = json_schema_for(format)
            if self._schema_form == "json_object":
                body["response_format"] = {"type": "json_object", "schema": schema}
            else:
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": typed_output.schema_name(format), "schema": schema},
                }
        return f"{self._root}/chat/completions", body

    def _parser(self, url: str, generation: GenerationInfo, stream: bool) -> StreamParser:
        return _OpenAIParser(self, url, generation, stream)

    def _fallback(self, body: dict[str, Any], error: BackendError) -> dict[str, Any] | None:
        """With ``response_format_type="auto"``: the ``json_object`` form of the schema after a refusal
        of the ``json_schema`` form (an error answer naming ``json_schema`` or ``response_format``);
        the backend sends that form from then on."""
        response_format = body.get("response_format")
        if (
            self.response_format_type != "auto"
            or not isinstance(error, (BadRequestError, ServerError))
            or not isinstance(response_format, dict)
            or response_format.get("type") != "json_schema"
            or not _REFUSED_FORM.search(error.server_message)
        ):
            return None
        self._schema_form = "json_object"
        logger.info(
            "%s at %s refused response_format json_schema (%s); sending the schema as "
            "{'type': 'json_object', 'schema': ...} from now on (response_format_type='json_object' "
            "skips the first try).",
            self.provider_name,
            self.base_url,
            error.server_message,
        )
        schema = response_format["json_schema"]["schema"]
        return {**body, "response_format": {"type": "json_object", "schema": schema}}

    async def list_models(self) -> list[ListedModel]:
        """The models the server lists (``GET {base_url}/models``), in its order.

        Raises a :class:`~backends.errors.BackendError` as a generation does (unreachable, an
        error status, a timeout), or :class:`~backends.errors.MalformedStreamError` for an
        answer that is not OpenAI's ``{"object": "list", "data": [...]}``.
        """
        url = f"{self._root}/models"
        document = await get_listing(self, url)
        data = document.get("data") if isinstance(document, dict) else None
        if not isinstance(data, list):
            raise _not_a_listing(self, url, document)
        models = []
        for item in data:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise _not_a_listing(self, url, document)
            created, owner = item.get("created"), item.get("owned_by")
            models.append(
                ListedModel(
                    item["id"],
                    created=created if isinstance(created, int) and not isinstance(created, bool) else None,
                    owned_by=owner if isinstance(owner, str) else None,
                )
            )
        return models

    def hint_unreachable(self) -> str:
        """Tell the user to start the server or fix base_url."""
        return (
            f"Is the server running and serving the OpenAI API under {self.base_url}? "
            f"Pass base_url= (including the /v1 path) or set OPENAI_BASE_URL."
        )

    def hint_model_not_found(self) -> str:
        """Tell the user how to list the models."""
        return f"Check the model name {self.model_id!r}: GET {self.base_url}/models lists the ones served."

    def hint_auth(self) -> str:
        """Tell the user where the key comes from."""
        state = "was sent" if self._api_key else "was not set"
        return f"The API key {state}: pass api_key= or set OPENAI_API_KEY to a key valid for this server."

    def hint_wire_format(self) -> str:
        """Name the endpoint the base URL should serve."""
        return (
            f"Check that {self.base_url}/chat/completions is an OpenAI-compatible endpoint "
            f"(base_url usually ends in /v1)."
        )

    @property
    def endpoint_kind(self) -> str:
        """An OpenAI chat-completions API."""
        return "an OpenAI-compatible API (/chat/completions)"

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return f"OpenAIBackend({self.model_id!r}, base_url={self.base_url!r}, api_key=<{key}>)"


class _OpenAIParser(StreamParser):
    def __init__(self, backend: HttpBackend, url: str, generation: GenerationInfo, stream: bool) -> None:
        super().__init__(backend, url, generation, stream)
        self.events = SSEDecoder(max_line_bytes=self.max_frame_bytes, max_event_bytes=self.max_frame_bytes)
        self.finished = False  # a finish_reason arrived
        self.model: str | None = None  # the response model recorded last

    def _feed(self, data: bytes, out: list[str]) -> None:
        try:
            events = self.events.feed(data)
        except LineTooLongError as exc:
            raise self.too_large(exc.what, exc.limit, exc.head) from None
        for event in events:
            text = self._event(event)
            if text:
                out.append(text)
                self.kept += 1

    def _close(self) -> Iterator[str]:
        for event in self.events.close():
            yield self._event(event)
        if not self.done and not self.finished:
            # A stream that sent its finish_reason is complete without `data: [DONE]`
            # (as the official client accepts it); without one, text may be missing.
            raise self.incomplete("ended the stream without a finish_reason or `data: [DONE]`")

    def _event(self, event: SSEEvent) -> str:
        if self.done:
            return ""
        data = event.data
        if event.event == "error":
            raise self.stream_error(_error_message(data))
        self.frames += 1
        if data.strip() == "[DONE]":
            self.done = True
            return ""
        # raw_decode: json.loads less its two Python frames per chunk. A chunk is one object
        # without whitespace around it; anything else goes to json.loads, which judges it exactly.
        try:
            obj, end = _DECODER.raw_decode(data)
        except ValueError:
            end = -1
        if end != len(data):
            try:
                obj = json.loads(data)
            except ValueError:
                raise self.malformed("an event whose data is not JSON", data) from None
        if not isinstance(obj, dict):
            raise self.malformed("an event whose data is not a JSON object", data)
        if obj.get("error") is not None:
            raise self.stream_error(_error_message(data))
        if "usage" in obj or obj.get("model") != self.model:  # the usage chunk, or news
            self._usage(obj)
        choices = obj.get("choices")
        if choices is None:
            return ""
        if not isinstance(choices, list):
            raise self.malformed("a chunk whose choices are not a list", data)
        text = ""
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            content = delta.get("content") if isinstance(delta, dict) else None
            if content is not None and not isinstance(content, str):
                raise self.malformed("a delta whose content is not a string", data)
            text += content or ""
            if choice.get("finish_reason"):
                self.generation.done_reason = str(choice["finish_reason"])
                self.finished = True
        return text

    def _close_whole(self, document: Any) -> Iterator[str]:
        obj = document
        if not isinstance(obj, dict) or not isinstance(obj.get("choices"), list) or not obj["choices"]:
            raise self.malformed("a response without choices", self.head)
        choice = obj["choices"][0]
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if content is not None and not isinstance(content, str):
            raise self.malformed("a message whose content is not a string", self.head)
        self.frames += 1
        self.done = True
        self.generation.done_reason = str(choice.get("finish_reason") or "stop")
        self._usage(obj)
        if content:
            yield content

    def _usage(self, obj: dict[str, Any]) -> None:
        usage = obj.get("usage")
        if isinstance(usage, dict):
            for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
                if isinstance(usage.get(key), int):
                    self.generation.usage[key] = usage[key]
        if isinstance(obj.get("model"), str):
            self.generation.extra["response_model"] = self.model = obj["model"]


def _not_a_listing(backend: OpenAIBackend, url: str, document: Any) -> MalformedStreamError:
    quoted = backend.shown_text(json.dumps(document)[:1000])
    return MalformedStreamError(
        f"{backend.provider_name} at {redact_url(url)} answered a model listing without a list of "
        f'{{"id": ...}} objects under "data": {quoted!r}. {backend.hint_wire_format()}',
        line=quoted,
        url=url,
        provider=backend.provider,
    )


def _error_message(data: str) -> str:
    try:
        obj = json.loads(data)
    except ValueError:
        return data
    if isinstance(obj, dict):
        error = obj.get("error", obj)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return data
