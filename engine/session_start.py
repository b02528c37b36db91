"""``start_session()``: a :class:`~engine.session.Session` on a backend named by a string.

The backend module is imported when the session is started, never when ``engine`` is
imported; the name is resolved in one place, ``backends.registry``.
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from engine.core import arguments
from engine.core.context import ChatContext, Context, SimpleContext
from engine.session import Session, set_preflight
from engine.session_arguments import CONTEXT_ALLOWED

if TYPE_CHECKING:
    from engine.core.backend import Backend

__all__ = ["start_session"]


def _backend_for(
    name: str, model_id: str | None, backend_kwargs: dict[str, Any]
) -> tuple[Backend, Callable[[], Awaitable[None]] | None]:
    """The one place that resolves a backend name (``backends.registry``).

    Returns the backend built from *model_id* and *backend_kwargs*, and the check to run
    before the session's first request (``None`` when there is none).
    """
    registry = importlib.import_module("backends.registry")
    try:
        entry = registry.entry(name)
    except ValueError as exc:
        raise ValueError(f"backend_name: {exc}; or pass start_session a backend object") from None

    backend = typing.cast("Backend", entry.create(model_id, **backend_kwargs))
    if not entry.check_reachable:
        return backend, None

    async def check_reachable() -> None:
        # Without it a lazy thunk would carry the error, and the first call would "succeed".
        errors = importlib.import_module("backends.errors")
        try:
            await typing.cast(Any, backend).check_reachable()
        except errors.BackendUnreachableError as exc:
            others = [e.session_example for e in registry.BACKENDS.values() if e.name != entry.name]
            raise errors.BackendUnreachableError(
                f"{exc} Or use another backend: {'; '.join(others)}.", url=exc.url, provider=exc.provider
            ) from exc

    return backend, check_reachable


def start_session(
    backend_name: str | Backend = "ollama",
    model_id: str | None = None,
    ctx: Context | None = None,
    *,
    context_type: Literal["simple", "chat"] | None = None,
    model_options: Mapping[str, Any] | None = None,
    plugins: Sequence[Any] | None = None,
    allow_context_type_change: bool = False,
    **backend_kwargs: Any,
) -> Session:
    """Start a session on a backend named by *backend_name*: "ollama" (default), "openai" or "scripted".

    The parameters are Mellea's:

    * "ollama": ``OllamaBackend`` at ``OLLAMA_HOST`` or http://localhost:11434 (model
      ``granite4.1:3b`` unless *model_id* says otherwise). If the server is not reachable,
      the session's first request fails with an error naming the URL and the alternatives.
    * "openai": ``OpenAIBackend`` for an OpenAI-compatible server (``base_url=...``).
    * "scripted": ``ScriptedBackend(deltas, delay=...)``, no server needed; ``deltas``
      defaults to a short canned reply.

    *model_id* and *backend_kwargs* go to the backend's constructor; a backend object may
    be passed instead of a name. *ctx* (or ``context_type="simple"``/``"chat"``, not both)
    is the starting context, a ``SimpleContext`` by default. *model_options* apply to every
    call of the session (each call's own win). A ``ModelOption`` the backend cannot honour
    is logged once as a warning. Sessions never change their context's type, so
    *allow_context_type_change* changes nothing; *plugins* are not supported.
    """
    if not isinstance(backend_name, str):
        arguments.has_method(
            "backend_name",
            backend_name,
            "generate_from_context",
            "a backend name (a str) or a backend object",
        )
    arguments.text("model_id", model_id, optional=True)
    if ctx is not None:
        arguments.instance("ctx", ctx, Context, CONTEXT_ALLOWED)
    arguments.one_of("context_type", context_type, ("simple", "chat"), optional=True)
    arguments.optional_mapping("model_options", model_options)
    if plugins is not None:
        arguments.instance(
            "plugins", plugins, (list, tuple), "a list (empty: rxllm has no plugin system), or None"
        )
    arguments.flag("allow_context_type_change", allow_context_type_change)
    if ctx is not None and context_type is not None:
        raise ValueError("start_session() takes ctx= or context_type=, not both")
    if context_type == "chat":
        ctx = ChatContext()
    elif context_type == "simple":
        ctx = SimpleContext()
    elif context_type is not None:
        raise ValueError(f"context_type must be 'simple' or 'chat', got {context_type!r}")
    if plugins:
        raise ValueError(
            "start_session(plugins=...): rxllm has no plugin system; drop plugins= (hooks can be "
            "written as Requirements or by composing the operators)"
        )
    if not isinstance(backend_name, str):
        return Session(backend_name, ctx, model_options=model_options)
    backend, preflight = _backend_for(backend_name, model_id, dict(backend_kwargs))
    session = Session(backend, ctx, model_options=model_options)
    set_preflight(session, preflight)
    return session
