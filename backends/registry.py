"""Every backend a name can pick: ``start_session("ollama")``, ``rxllm stream --backend ollama``.

One :class:`BackendEntry` per backend says what the name means: the class (imported
only when a backend is created, so reading the registry loads no HTTP client), the
model asked for when none is named, the environment variables its constructor reads,
and whether a session checks that the server accepts connections before its first
request. ``start_session``, the ``rxllm`` command's ``--backend`` choices, their help
and the hints in its error messages all read :data:`BACKENDS`; adding a backend is
adding one entry.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from engine.core.backend import Backend

__all__ = ["BACKENDS", "BackendEntry", "entry", "names"]


@attrs.frozen
class BackendEntry:
    """What a backend name stands for."""

    name: str
    """The name users type: ``start_session(name)``, ``--backend name``."""
    summary: str
    """What it talks to, in a few words (the ``--backend`` help)."""
    target: str
    """``"module:Class"`` of the backend class; imported on first use."""
    default_model: str | None = None
    """The model asked for when none is named; ``None`` with ``model_required``: one must be named."""
    model_required: bool = False
    model_example: str = "MODEL"
    """A model name to show in messages, e.g. ``gpt-4o-mini``."""
    environment: Mapping[str, str] = attrs.field(factory=dict)
    """Constructor keyword -> the environment variable it defaults to (``base_url`` -> ``OLLAMA_HOST``)."""
    default_base_url: str | None = None
    """Where the backend looks when neither ``base_url`` nor its variable is set (``None``: no server)."""
    defaults: Mapping[str, Any] = attrs.field(factory=dict)
    """Constructor keywords used when the caller does not give them."""
    check_reachable: bool = False
    """A session probes the server (``backend.check_reachable()``) before its first request, so the
    first call fails with a clear message instead of a lazy thunk that carries the error."""
    start_hint: str | None = None
    """The command that starts the server, for "cannot reach" messages (``ollama serve``)."""
    pull_hint: str | None = None
    """The command that fetches a missing model, ``{model}`` filled in (``ollama pull {model}``)."""
    session_example: str = ""
    """How to start a session on it, for messages that suggest another backend."""

    def backend_class(self) -> type[Any]:
        """The backend class (its module is imported now)."""
        module_name, _, class_name = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ImportError(
                f"the {self.name!r} backend needs {module_name}, which could not be imported ({exc}); "
                "the 'scripted' backend runs without a model server"
            ) from exc
        cls: type[Any] = getattr(module, class_name)
        return cls

    def accepts(self, keyword: str) -> bool:
        """Whether the backend's constructor takes *keyword*."""
        cls = self.backend_class()
        parameters = inspect.signature(cls).parameters
        if keyword in parameters:
            return True
        for parameter in parameters.values():
            if parameter.kind is parameter.VAR_KEYWORD:
                # **options: Unpack[SomeTypedDict] takes that TypedDict's keys only.
                hint = typing.get_type_hints(cls.__init__, include_extras=True).get(parameter.name)
                if typing.get_origin(hint) is typing.Unpack:
                    (options,) = typing.get_args(hint)
                    return keyword in typing.get_type_hints(options)
                return True
        return False

    def model(self, model_id: str | None) -> str | None:
        """*model_id*, else the default model; ``ValueError`` if this backend needs one named."""
        if model_id is not None:
            return model_id
        if self.model_required:
            raise ValueError(
                f"the {self.name!r} backend needs a model_id, the name the server serves, e.g. "
                f"{self.session_example or repr(self.model_example)}"
            )
        return self.default_model

    def create(self, model_id: str | None = None, **kwargs: Any) -> Backend:
        """A new backend: ``Class(model_id=..., **defaults, **kwargs)``."""
        model = self.model(model_id)
        arguments = {**self.defaults, **kwargs}
        if model is not None:
            arguments["model_id"] = model
        backend: Backend = self.backend_class()(**arguments)
        return backend


BACKENDS: Mapping[str, BackendEntry] = {
    entry.name: entry
    for entry in (
        BackendEntry(
            name="ollama",
            summary="a local Ollama server",
            target="backends.ollama:OllamaBackend",
            default_model="granite4.1:3b",
            model_example="granite4.1:3b",
            environment={"base_url": "OLLAMA_HOST"},
            default_base_url="http://localhost:11434",
            check_reachable=True,
            start_hint="ollama serve",
            pull_hint="ollama pull {model}",
            session_example="start_session('ollama', 'granite4.1:3b')",
        ),
        BackendEntry(
            name="openai",
            summary="any OpenAI-compatible server (vLLM, llama.cpp, LM Studio, OpenAI)",
            target="backends.openai:OpenAIBackend",
            model_required=True,
            model_example="gpt-4o-mini",
            environment={"base_url": "OPENAI_BASE_URL", "api_key": "OPENAI_API_KEY"},
            default_base_url="https://api.openai.com/v1",
            session_example="start_session('openai', 'gpt-4o-mini', base_url=..., api_key=...)",
        ),
        BackendEntry(
            name="scripted",
            summary="a simulator that replays a script, no server",
            target="backends.scripted:ScriptedBackend",
            default_model="scripted",
            defaults={"deltas": ("This is ", "a scripted ", "response.")},
            session_example="start_session('scripted', deltas=[...])",
        ),
    )
}
"""Every backend by name, the default (``ollama``) first."""


def names() -> tuple[str, ...]:
    """The backend names, the default first."""
    return tuple(BACKENDS)


def entry(name: str) -> BackendEntry:
    """The entry for *name* (any case); ``ValueError`` naming the choices if there is none."""
    found = BACKENDS.get(name.lower())
    if found is None:
        raise ValueError(f"unknown backend {name!r}; the backends are {', '.join(map(repr, BACKENDS))}")
    return found
