"""The models a server lists: ``OpenAIBackend.list_models()`` (``GET {base_url}/models``) and
``OllamaBackend.list_models()`` (``GET /api/tags``) read a listing with :func:`get_listing`
and return :class:`ListedModel` values."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import aiohttp
import attrs

from backends._failures import status_error, translate
from backends.errors import MalformedStreamError, RequestTimeoutError, redact_url

if TYPE_CHECKING:
    from backends._http import HttpBackend

__all__ = ["ListedModel", "get_listing"]

LISTING_TIMEOUT = 10.0
"""Seconds a listing may take when the backend sets no ``timeout``: it is one small document."""


@attrs.frozen
class ListedModel:
    """One model a server lists: its ``id`` (the name a request gives), when it was created or
    last changed (``created``, Unix seconds, ``None`` if the server does not say) and who owns
    it (``owned_by``, ``None`` if the server does not say)."""

    id: str
    created: int | None = None
    owned_by: str | None = None


async def get_listing(backend: HttpBackend, url: str) -> Any:
    """``GET`` *url* with *backend*'s connection pool, headers (its key) and limits; the JSON document.

    Raises the backend's :class:`~backends.errors.BackendError` subclasses, as a generation does:
    unreachable, a timeout, an error status with the server's message (secrets redacted), or
    :class:`~backends.errors.MalformedStreamError` for a body that is not JSON.
    """
    shown = redact_url(url)
    session = backend._ensure_session()
    limit = backend.timeout or LISTING_TIMEOUT
    try:
        async with asyncio.timeout(limit):
            async with session.get(url, headers=backend._headers(False), allow_redirects=False) as response:
                if not 200 <= response.status < 300:
                    raise await status_error(backend, response, shown, {})
                raw = await response.content.read(backend.max_body_bytes + 1)
    except (aiohttp.ClientError, OSError) as exc:  # aiohttp's connect timeout included
        raise translate(backend, exc, shown, None, False) from None
    except TimeoutError:
        raise RequestTimeoutError(
            f"{backend.provider_name} at {shown} did not list its models within {limit} s.",
            timeout=limit,
            url=shown,
            provider=backend.provider,
        ) from None
    try:
        if len(raw) > backend.max_body_bytes:
            raise ValueError(f"larger than max_body_bytes={backend.max_body_bytes}")
        return json.loads(raw)
    except ValueError:
        quoted = backend.shown_text(raw[:1000].decode("utf-8", errors="replace"))
        raise MalformedStreamError(
            f"{backend.provider_name} at {shown} answered a model listing that is not JSON: {quoted!r}. "
            f"{backend.hint_wire_format()}",
            line=quoted,
            url=shown,
            provider=backend.provider,
        ) from None
