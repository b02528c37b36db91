"""The telemetry switch, and the hooks the engine calls around a run and a generation.

OpenTelemetry traces and metrics are opt-in: ``RXLLM_TRACES_ENABLED=1`` /
``RXLLM_METRICS_ENABLED=1`` in the environment (read when this module is first
imported), or :func:`enable`. The library follows OpenTelemetry's convention for
libraries: it emits through the *global* tracer and meter providers, which the
application configures (or ``rxllm`` and ``rxllm serve`` do, from the environment; see
:mod:`engine.core.telemetry_export`).

Off, or with OpenTelemetry not installed, nothing of ``opentelemetry`` is imported and no
call is added per delta: the engine reads the module attribute :data:`active` once per run
and once per generation, and calls a hook only when it is true. On, the Python work
happens per run, per generation and per check (its timing), never per delta or per chunk:
a run's events are read once it ends, and the spans of a generation are written from its
:class:`~engine.core.thunk.GenerationInfo` once it ends.

Prompt and response text never goes on a span unless asked for (``content=True`` or
``RXLLM_TRACES_CONTENT=1``): it may hold personal data.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Coroutine, Iterator, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeAlias, TypeVar

import attrs

if TYPE_CHECKING:
    from engine.core.generation import GenerationInfo

__all__ = [
    "TelemetrySettings",
    "active",
    "disable",
    "enable",
    "generation_ended",
    "generation_started",
    "run_scope",
    "session_call",
    "settings",
]

P = ParamSpec("P")
R = TypeVar("R")
AsyncMethod: TypeAlias = Callable[P, Coroutine[Any, Any, R]]

logger = logging.getLogger(__name__)

INSTALL_HINT = 'install the extra: pip install "rxllm[otel]"'

TRUE_VALUES = frozenset({"1", "true", "yes", "on"})


@attrs.frozen
class TelemetrySettings:
    """What the library emits.

    ``traces``/``metrics``: spans and metrics on or off. ``content``: prompt and response
    text on the spans (off by default: it may hold personal data). ``chunk_events``: one
    span event per chunk verdict (the SDK keeps 128 events per span by default; the
    counts of verdicts by status are always on the run's span).
    """

    traces: bool = False
    metrics: bool = False
    content: bool = False
    chunk_events: bool = False


active: bool = False
"""True when traces or metrics are on. The engine reads it before calling any hook."""

_settings = TelemetrySettings()
_impl: ModuleType | None = None  # engine.core.telemetry_otel, imported when switched on


def settings() -> TelemetrySettings:
    """What is switched on now."""
    return _settings


def enable(
    *, traces: bool = True, metrics: bool = True, content: bool = False, chunk_events: bool = False
) -> None:
    """Switch emission on, through the global tracer and meter providers.

    Configure the providers (``opentelemetry.trace.set_tracer_provider``,
    ``opentelemetry.metrics.set_meter_provider``) before or after; until then
    OpenTelemetry's no-op providers drop everything.

    Raises:
        ImportError: OpenTelemetry is not installed (``pip install "rxllm[otel]"``).
    """
    global _settings, _impl, active
    for name, value in (
        ("traces", traces),
        ("metrics", metrics),
        ("content", content),
        ("chunk_events", chunk_events),
    ):
        if not isinstance(value, bool):
            raise TypeError(f"enable(): {name} must be True or False, got {value!r}")
    new = TelemetrySettings(traces=traces, metrics=metrics, content=content, chunk_events=chunk_events)
    if traces or metrics:
        try:
            from engine.core import telemetry_otel
        except ImportError as exc:
            raise ImportError(f"rxllm telemetry needs OpenTelemetry: {INSTALL_HINT} ({exc})") from None
        telemetry_otel.configure(new)
        _impl = telemetry_otel
    _settings = new
    active = traces or metrics


def disable() -> None:
    """Switch emission off (runs already started finish their spans)."""
    global _settings, active
    _settings = TelemetrySettings()
    active = False


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in TRUE_VALUES


def enable_from_environment() -> None:
    """Apply ``RXLLM_TRACES_ENABLED``, ``RXLLM_METRICS_ENABLED``, ``RXLLM_TRACES_CONTENT`` and
    ``RXLLM_TRACES_CHUNK_EVENTS``. If OpenTelemetry is missing, say so once and stay off."""
    traces, metrics = _flag("RXLLM_TRACES_ENABLED"), _flag("RXLLM_METRICS_ENABLED")
    if not (traces or metrics):
        return
    try:
        enable(
            traces=traces,
            metrics=metrics,
            content=_flag("RXLLM_TRACES_CONTENT"),
            chunk_events=_flag("RXLLM_TRACES_CHUNK_EVENTS"),
        )
    except ImportError as exc:  # asked for in the environment and not installed: a misconfiguration
        logger.warning("RXLLM_TRACES_ENABLED / RXLLM_METRICS_ENABLED are set but %s", exc)


# -- hooks (called only while `active`) ------------------------------------------------


class _NoRun:
    """The run scope when telemetry is off: does nothing."""

    def watch(self, result: Any) -> None:
        """Nothing to observe."""


_NO_RUN = _NoRun()


@contextlib.contextmanager
def run_scope(backend: Any, action: Any, requirements: Sequence[Any]) -> Iterator[Any]:
    """The span of one run: current while the generation starts (so the backend's task and
    the validators inherit it), ended when the run's ``CompletedEvent`` arrives.

    *backend* (a ``Backend``) and *requirements* (``Requirement`` objects) are typed ``Any``:
    the thunk calls this module, and both of those modules import the thunk, so naming
    them here, even for the type checker only, would close an import cycle.

    Use as ``with run_scope(...) as run: <start the generation>`` then ``run.watch(result)``.
    Off, it yields an object whose ``watch`` does nothing.
    """
    if not active or _impl is None:
        yield _NO_RUN
        return
    with _impl.run_scope(backend, action, requirements) as run:
        yield run


def session_call(call: str) -> Callable[[AsyncMethod[P, R]], AsyncMethod[P, R]]:
    """Decorate a session method: a span ``rxllm.session {model}`` per call (when on), current
    while it runs, so its generations, checks and retries are its children. *call* names it
    (``rxllm.session.call``). The first argument must be the session (its ``backend`` is read)."""

    def decorate(method: AsyncMethod[P, R]) -> AsyncMethod[P, R]:
        @functools.wraps(method)
        async def traced(*args: P.args, **kwargs: P.kwargs) -> R:
            if not active or _impl is None:
                return await method(*args, **kwargs)
            with _impl.call_scope(call, getattr(args[0], "backend", None)):
                return await method(*args, **kwargs)

        return traced

    return decorate


def generation_started(generation: GenerationInfo) -> object | None:
    """Remember the context a generation starts in (its span's parent); ``None`` when off."""
    if not active or _impl is None:
        return None
    record: object = _impl.generation_started(generation)
    return record


def generation_ended(
    record: object, generation: GenerationInfo, error: Exception | None, cancelled: bool
) -> None:
    """Write the span and the metrics of a generation that ended (completed, failed or cancelled)."""
    if _impl is not None:
        _impl.generation_ended(record, generation, error, cancelled)


enable_from_environment()
