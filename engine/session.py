"""Sessions: a backend, a context, and Mellea's async API over them.

``start_session()`` builds a :class:`Session` for a backend named by a string
("ollama", the default, "openai" or "scripted"); the backend module is imported
when the session is started, never when ``engine`` is imported.

Every async method has a synchronous twin with the same signature: ``ainstruct`` /
``instruct``, ``achat`` / ``chat``, ``aact`` / ``act``, ``avalidate`` / ``validate``,
``aquery`` / ``query``, ``atransform`` / ``transform``.

Laziness (DESIGN.md, "Decisions"): when there is nothing to validate, or
``strategy=None``, the async methods return a lazy thunk at once, with the generation
running in the background (``is_computed()`` is False); with requirements and a
sampling strategy they await the sampling and return a computed thunk (or the whole
:class:`~engine.sampling.SamplingResult` with ``return_sampling_results=True``).
``achat`` always returns a computed thunk whose ``parsed_repr`` is the assistant
``Message``. The sync twins always return computed results.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import logging
import re
import typing
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, overload

import attrs

from engine.core.components import CBlock, Message
from engine.core.context import Context, SimpleContext
from engine.core.options import ModelOption
from engine.core.requirements import Requirement, ValidationResult, as_requirements, validate_all
from engine.core.thunk import ModelOutputThunk
from engine.sampling import (
    RejectionSamplingStrategy,
    SamplingResult,
    SamplingStrategy,
    make_instruction,
)

if TYPE_CHECKING:
    from engine.core.backend import Backend

__all__ = [
    "CHAT_CONTEXT_WARNING",
    "MissingUserVariableError",
    "Query",
    "Session",
    "Transform",
    "fill_user_variables",
    "start_session",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

CHAT_CONTEXT_WARNING: Final = (
    "Not using a SimpleContext with asynchronous requests could cause unexpected results "
    "due to stale contexts. Ensure you await between requests."
)
"""Logged (once per session) when an async method runs on a context that is not a SimpleContext."""


class _Default:
    """Sentinel type for "the default sampling strategy" (``RejectionSamplingStrategy(loop_budget=2)``)."""

    _instance: _Default | None = None

    def __new__(cls) -> _Default:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "RejectionSamplingStrategy(loop_budget=2)"


DEFAULT_STRATEGY: Final = _Default()

StrategyArg = SamplingStrategy | _Default | None

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class MissingUserVariableError(KeyError):
    """A ``{{name}}`` placeholder has no value in ``user_variables``."""

    def __str__(self) -> str:
        return str(self.args[0])


def fill_user_variables(text: str, user_variables: Mapping[str, Any] | None) -> str:
    """Replace every ``{{name}}`` in *text* with ``str(user_variables[name])``.

    With ``user_variables=None`` the text is returned unchanged (so prompts may contain
    literal braces). A placeholder without a value is a :class:`MissingUserVariableError`
    (a ``KeyError``) naming it.
    """
    if user_variables is None:
        return text
    missing = sorted({m.group(1) for m in _PLACEHOLDER.finditer(text)} - set(user_variables))
    if missing:
        names = ", ".join("{{" + name + "}}" for name in missing)
        raise MissingUserVariableError(
            f"no value for {names} in user_variables (it has {sorted(user_variables)!r}); "
            f"add {missing[0]!r} to user_variables or remove the placeholder"
        )
    return _PLACEHOLDER.sub(lambda m: str(user_variables[m.group(1)]), text)


def _text_of(obj: Any) -> str:
    """The text an object shows the model: ``format_for_llm()`` if it has one, else ``str()``."""
    render = getattr(obj, "format_for_llm", None)
    if callable(render):
        return str(render())
    return str(obj)


@attrs.frozen
class Query:
    """A question about an object: the object's text, then the question."""

    obj: Any
    query: str

    def format_for_llm(self) -> str:
        """The object's text and the question."""
        return f"{_text_of(self.obj)}\n\nAnswer this question about the text above:\n{self.query}"


@attrs.frozen
class Transform:
    """A rewrite of an object: the object's text, then how to transform it."""

    obj: Any
    transformation: str

    def format_for_llm(self) -> str:
        """The object's text and the transformation; the model answers with the result only."""
        return (
            f"{_text_of(self.obj)}\n\nTransform the text above as follows and answer with the "
            f"transformed text only:\n{self.transformation}"
        )


def _in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _close_loop(loop: asyncio.AbstractEventLoop, backend: Any) -> None:
    """Close a session's private loop: cancel leftovers, close the backend there, finish
    async generators, close the loop. (Also the session's finalizer: *backend*, not the
    session, is held, so the session can be collected.)"""
    if loop.is_closed():
        return
    if not _in_running_loop():
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        aclose = getattr(backend, "aclose", None)
        if callable(aclose):
            loop.run_until_complete(aclose())
        loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


class Session:
    """A backend and the current context; every method sends the context's view along.

    Build one with :func:`start_session`, or directly from any backend:
    ``Session(ScriptedBackend(["hi"]))``. ``ctx`` defaults to a ``SimpleContext`` (safe
    for concurrent requests); the session replaces ``self.ctx`` with the new context
    after every generation. ``model_options`` are merged under each call's own.

    Lifetime: the sync methods run on a private event loop that ``close()`` (or the
    ``with`` block, or garbage collection) closes, with the backend. A backend with an
    ``aclose()`` (the HTTP ones) that is used from a coroutine is closed when that event
    loop shuts down (``asyncio.run`` returning), so seed code that never closes its
    session leaks nothing; ``await session.aclose()`` (or ``async with``) closes it at
    once. HTTP backends are bound to one event loop: use a session either from sync
    code or from one ``asyncio.run``, not both.
    """

    def __init__(
        self,
        backend: Backend,
        ctx: Context | None = None,
        *,
        model_options: Mapping[str, Any] | None = None,
        validation_backend: Backend | None = None,
    ) -> None:
        if not callable(getattr(backend, "generate_from_context", None)):
            raise TypeError(
                f"Session needs a backend with an async generate_from_context(); got {type(backend).__name__}"
            )
        self.backend = backend
        self.ctx: Context = ctx if ctx is not None else SimpleContext()
        self.model_options: dict[str, Any] = dict(model_options or {})
        self.validation_backend = validation_backend
        """The backend that judges requirements (LLM-as-judge); ``None`` means ``backend``."""
        self._warned_ctx = False
        self._preflight: Callable[[], Awaitable[None]] | None = None
        self._sync_loop: asyncio.AbstractEventLoop | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._backend_factory: Callable[[], Backend] | None = None
        self._guards: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = (
            weakref.WeakKeyDictionary()
        )

    # -- plumbing ------------------------------------------------------------------

    def _warn_context(self) -> None:
        if not self._warned_ctx and not isinstance(self.ctx, SimpleContext):
            self._warned_ctx = True
            logger.warning(CHAT_CONTEXT_WARNING)

    def _options(self, model_options: Mapping[str, Any] | None) -> dict[str, Any]:
        return ModelOption.merge(self.model_options, dict(model_options) if model_options else None)

    async def _ready(self) -> None:
        """Before a request: the one-time reachability check, and close-at-loop-shutdown."""
        preflight = self._preflight
        if preflight is not None:
            await preflight()
            self._preflight = None
        self._close_with_loop()

    def _close_with_loop(self) -> None:
        """Close the backend when the running loop shuts down, if nobody closes it before.

        Seed code never closes its session, and an HTTP backend's connection pool must be
        closed on the loop it lives on: a guard task waits until ``asyncio.run`` (or any
        runner) cancels it at shutdown, and its ``finally`` closes the backend there.
        """
        if not callable(getattr(self.backend, "aclose", None)):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if loop is self._sync_loop:
            return  # close() and the finalizer close the backend on the private loop
        if loop not in self._guards:
            self._guards[loop] = loop.create_task(_close_at_shutdown(self), name="rxllm-session-close-guard")

    def _run_sync(self, coro: Coroutine[Any, Any, T], async_name: str) -> T:
        """Run *coro* to completion on this session's private event loop."""
        if _in_running_loop():
            coro.close()
            sync_name = async_name[1:]
            raise RuntimeError(
                f"Session.{sync_name}() is synchronous and cannot run inside a running event loop "
                f"(it would block the loop); use `await session.{async_name}(...)` instead"
            )
        loop = self._sync_loop
        if loop is None or loop.is_closed():
            loop = self._sync_loop = asyncio.new_event_loop()
            self._finalizer = weakref.finalize(self, _close_loop, loop, self.backend)
        return loop.run_until_complete(coro)

    def _fork_for_other_loop(self) -> Session:
        """A session to use on another event loop (a helper thread): the same context,
        options and backend, or a fresh backend when this one is bound to its loop."""
        backend = self.backend
        if callable(getattr(backend, "aclose", None)):
            if self._backend_factory is None:
                raise RuntimeError(
                    f"{type(backend).__name__} is bound to the event loop it was first used on, so it "
                    "cannot serve a synchronous call from inside a running loop; await the async form "
                    "instead (e.g. `await f.acall(m, ...)` for a @generative function)"
                )
            backend = self._backend_factory()
        fork = Session(
            backend, self.ctx, model_options=self.model_options, validation_backend=self.validation_backend
        )
        fork._warned_ctx = self._warned_ctx
        fork._backend_factory = self._backend_factory
        return fork

    async def _generate(
        self,
        action: Any,
        requirements: Sequence[Requirement | str] | None,
        strategy: StrategyArg,
        return_sampling_results: bool,
        format: type | None,
        model_options: Mapping[str, Any] | None,
    ) -> ModelOutputThunk[Any] | SamplingResult:
        await self._ready()
        reqs = as_requirements(requirements)
        options = self._options(model_options)
        if strategy is DEFAULT_STRATEGY:
            strategy = RejectionSamplingStrategy(loop_budget=2)
        if strategy is None:
            if return_sampling_results:
                raise ValueError(
                    "return_sampling_results=True needs a sampling strategy; drop strategy=None "
                    "or set return_sampling_results=False"
                )
            if reqs:
                logger.debug("strategy=None: %d requirement(s) are rendered but not validated", len(reqs))
        if strategy is None or (not reqs and not return_sampling_results):
            thunk, self.ctx = await self.backend.generate_from_context(
                action, self.ctx, format=format, model_options=options
            )
            return thunk
        assert isinstance(strategy, SamplingStrategy)
        result = await strategy.sample(
            action,
            context=self.ctx,
            backend=self.backend,
            requirements=reqs,
            validation_backend=self.validation_backend,
            format=format,
            model_options=options,
        )
        self.ctx = result.result_ctx
        return result if return_sampling_results else result.result

    # -- instruct --------------------------------------------------------------------

    @overload
    async def ainstruct(
        self,
        description: str,
        *,
        requirements: Sequence[Requirement | str] | None = ...,
        strategy: StrategyArg = ...,
        user_variables: Mapping[str, Any] | None = ...,
        return_sampling_results: Literal[False] = ...,
        format: type | None = ...,
        model_options: Mapping[str, Any] | None = ...,
    ) -> ModelOutputThunk[Any]: ...

    @overload
    async def ainstruct(
        self,
        description: str,
        *,
        requirements: Sequence[Requirement | str] | None = ...,
        strategy: StrategyArg = ...,
        user_variables: Mapping[str, Any] | None = ...,
        return_sampling_results: Literal[True],
        format: type | None = ...,
        model_options: Mapping[str, Any] | None = ...,
    ) -> SamplingResult: ...

    async def ainstruct(
        self,
        description: str,
        *,
        requirements: Sequence[Requirement | str] | None = None,
        strategy: StrategyArg = DEFAULT_STRATEGY,
        user_variables: Mapping[str, Any] | None = None,
        return_sampling_results: bool = False,
        format: type | None = None,
        model_options: Mapping[str, Any] | None = None,
    ) -> ModelOutputThunk[Any] | SamplingResult:
        """Instruct the model; ``{{name}}`` placeholders are filled from *user_variables*.

        Without requirements (or with ``strategy=None``) this returns a lazy thunk at
        once, its generation running in the background. With requirements the default
        strategy, ``RejectionSamplingStrategy(loop_budget=2)``, generates, validates and
        retries; the chosen output comes back computed, or the whole
        :class:`SamplingResult` (every attempt, ``success``) with
        ``return_sampling_results=True``.
        """
        self._warn_context()
        return await self._instruct(
            description,
            requirements,
            strategy,
            user_variables,
            return_sampling_results,
            format,
            model_options,
        )

    async def _instruct(
        self,
        description: str,
        requirements: Sequence[Requirement | str] | None,
        strategy: StrategyArg,
        user_variables: Mapping[str, Any] | None,
        return_sampling_results: bool,
        format: type | None,
        model_options: Mapping[str, Any] | None,
    ) -> ModelOutputThunk[Any] | SamplingResult:
        reqs = as_requirements(requirements)
        action = make_instruction(fill_user_variables(description, user_variables), reqs)
        return await self._generate(action, reqs, strategy, return_sampling_results, format, model_options)

    @overload
    def instruct(
        self,
        description: str,
        *,
        requirements: Sequence[Requirement | str] | None = ...,
        strategy: StrategyArg = ...,
        user_variables: Mapping[str, Any] | None = ...,
        return_sampling_results: Literal[False] = ...,
        format: type | None = ...,
        model_options: Mapping[str, Any] | None = ...,
    ) -> ModelOutputThunk[Any]: ...

    @overload
    def instruct(
        self,
        description: str,
        *,
        requirements: Sequence[Requirement | str] | None = ...,
        strategy: StrategyArg = ...,
        user_variables: Mapping[str, Any] | None = ...,
        return_sampling_results: Literal[True],
        format: type | None = ...,
        model_options: Mapping[str, Any] | None = ...,
    ) -> SamplingResult: ...

    def instruct(
        self,
        description: str,
        *,
        requirements: Sequence[Requirement | str] | None = None,
        strategy: StrategyArg = DEFAULT_STRATEGY,
        user_variables: Mapping[str, Any] | None = None,
        return_sampling_results: bool = False,
        format: type | None = None,
        model_options: Mapping[str, Any] | None = None,
    ) -> ModelOutputThunk[Any] | SamplingResult:
        """Synchronous :meth:`ainstruct`; returns a computed result. Not for use inside a running loop."""

        async def run() -> ModelOutputThunk[Any] | SamplingResult:
            out = await self._instruct(
                description,
                requirements,
                strategy,
                user_variables,
                return_sampling_results,
                format,
                model_options,
            )
            await _resolved(out)
            return out

        return self._run_sync(run(), "ainstruct")

    # -- act ---------------------------------------------------------------------------

    @overload
    async def aact(
        self,
        action: Any,
        *,
        requirements: Sequence[Requirement | str] | None = ...,
        strategy: StrategyArg = ...,
        return_sampling_results: Literal[False] = ...,
        format: type | None = ...,
        model_options: Mapping[str, Any] | None = ...,
    ) -> ModelOutputThunk[Any]: ...

    @overload
    async def aact(
        self,
        action: Any,
        *,
        requirements: Sequence[Requirement | str] | None = ...,
        strategy: StrategyArg = ...,
        return_sampling_results: Literal[True],
        format: type | None = ...,
        model_options: Mapping[str, Any] | None = ...,
    ) -> SamplingResult: ...

    async def aact(
        self,
        action: Any,
        *,
        requirements: Sequence[Requirement | str] | None = None,
        strategy: StrategyArg = DEFAULT_STRATEGY,
        return_sampling_results: bool = False,
        format: type | None = None,
        model_options: Mapping[str, Any] | None = None,
    ) -> ModelOutputThunk[Any] | SamplingResult:
        """Generate from any component (anything with ``format_for_llm()``); a plain
        string is sent as a ``CBlock``. Laziness and sampling as in :meth:`ainstruct`."""
        self._warn_context()
        return await self._generate(
            _as_component(action), requirements, strategy, return_sampling_results, format, model_options
        )

    @overload
    def act(
        self,
        action: Any,
        *,
        requirements: Sequence[Requirement | str] | None = ...,
        strategy: StrategyArg = ...,
        return_sampling_results: Literal[False] = ...,
        format: type | None = ...,
        model_options: Mapping[str, Any] | None = ...,
    ) -> ModelOutputThunk[Any]: ...

    @overload
    def act(
        self,
        action: Any,
        *,
        requirements: Sequence[Requirement | str] | None = ...,
        strategy: StrategyArg = ...,
        return_sampling_results: Literal[True],
        format: type | None = ...,
        model_options: Mapping[str, Any] | None = ...,
    ) -> SamplingResult: ...

    def act(
        self,
        action: Any,
        *,
        requirements: Sequence[Requirement | str] | None = None,
        strategy: StrategyArg = DEFAULT_STRATEGY,
        return_sampling_results: bool = False,
        format: type | None = None,
        model_options: Mapping[str, Any] | None = None,
    ) -> ModelOutputThunk[Any] | SamplingResult:
        """Synchronous :meth:`aact`; returns a computed result. Not for use inside a running loop."""

        async def run() -> ModelOutputThunk[Any] | SamplingResult:
            out = await self._generate(
                _as_component(action), requirements, strategy, return_sampling_results, format, model_options
            )
            await _resolved(out)
            return out

        return self._run_sync(run(), "aact")

    # -- chat ----------------------------------------------------------------------------

    async def achat(
        self,
        content: str,
        role: Literal["system", "user", "assistant", "tool"] = "user",
        *,
        user_variables: Mapping[str, Any] | None = None,
        format: type | None = None,
        model_options: Mapping[str, Any] | None = None,
    ) -> ModelOutputThunk[Message]:
        """Send one chat message and wait for the reply.

        Returns a computed thunk whose ``parsed_repr`` is the assistant ``Message``; both
        turns (the message and the reply) are appended to the session's context, so with
        a ``ChatContext`` the next call sees this exchange.
        """
        self._warn_context()
        return await self._chat(content, role, user_variables, format, model_options)

    async def _chat(
        self,
        content: str,
        role: Literal["system", "user", "assistant", "tool"],
        user_variables: Mapping[str, Any] | None,
        format: type | None,
        model_options: Mapping[str, Any] | None,
    ) -> ModelOutputThunk[Message]:
        await self._ready()
        message = Message(role, fill_user_variables(content, user_variables))
        thunk, new_ctx = await self.backend.generate_from_context(
            message, self.ctx, format=format, model_options=self._options(model_options)
        )
        try:
            text = await thunk.avalue()
        except BaseException:
            thunk.cancel()
            raise
        thunk.parsed_repr = Message("assistant", text)
        self.ctx = new_ctx
        return thunk

    def chat(
        self,
        content: str,
        role: Literal["system", "user", "assistant", "tool"] = "user",
        *,
        user_variables: Mapping[str, Any] | None = None,
        format: type | None = None,
        model_options: Mapping[str, Any] | None = None,
    ) -> ModelOutputThunk[Message]:
        """Synchronous :meth:`achat`. Not for use inside a running loop."""
        return self._run_sync(self._chat(content, role, user_variables, format, model_options), "achat")

    # -- validate ------------------------------------------------------------------------

    async def avalidate(
        self,
        requirements: Sequence[Requirement | str] | Requirement | str,
        *,
        output: Any = None,
        format: type | None = None,
        model_options: Mapping[str, Any] | None = None,
    ) -> list[ValidationResult]:
        """Check *requirements* (in parallel) against *output*, or against the newest
        model output in the session's context when *output* is ``None``.

        *output* may be a thunk, a ``CBlock`` or a string. Requirements without a
        ``validation_fn`` are judged by the model (the session's ``validation_backend``
        or its backend).
        """
        return await self._validate(requirements, output, model_options)

    async def _validate(
        self,
        requirements: Sequence[Requirement | str] | Requirement | str,
        output: Any,
        model_options: Mapping[str, Any] | None,
    ) -> list[ValidationResult]:
        reqs = as_requirements(requirements)
        if output is None:
            ctx = self.ctx
            if ctx.last_output() is None:
                raise ValueError(
                    "avalidate found no model output to check: the session has generated nothing yet; "
                    "pass output=... or generate first"
                )
        elif isinstance(output, ModelOutputThunk):
            ctx = SimpleContext().add(output)
        else:
            text = output.value if isinstance(output, CBlock) else str(output)
            ctx = SimpleContext().add(ModelOutputThunk(value=text))
        judge = self.validation_backend if self.validation_backend is not None else self.backend
        if any(req.validation_fn is None for req in reqs):
            await self._ready()
        copies = [copy.copy(req) for req in reqs]
        return list(await validate_all(copies, judge, ctx, model_options=self._options(model_options)))

    def validate(
        self,
        requirements: Sequence[Requirement | str] | Requirement | str,
        *,
        output: Any = None,
        format: type | None = None,
        model_options: Mapping[str, Any] | None = None,
    ) -> list[ValidationResult]:
        """Synchronous :meth:`avalidate`. Not for use inside a running loop."""
        return self._run_sync(self._validate(requirements, output, model_options), "avalidate")

    # -- query and transform ---------------------------------------------------------

    async def aquery(
        self,
        obj: Any,
        query: str,
        *,
        format: type | None = None,
        model_options: Mapping[str, Any] | None = None,
    ) -> ModelOutputThunk[Any]:
        """Ask *query* about *obj* (its ``format_for_llm()`` or ``str()``); returns a lazy thunk."""
        self._warn_context()
        return await self._plain(Query(obj, query), format, model_options)

    def query(
        self,
        obj: Any,
        query: str,
        *,
        format: type | None = None,
        model_options: Mapping[str, Any] | None = None,
    ) -> ModelOutputThunk[Any]:
        """Synchronous :meth:`aquery`; returns a computed thunk. Not for use inside a running loop."""
        return self._run_sync(self._plain(Query(obj, query), format, model_options, resolve=True), "aquery")

    async def atransform(
        self,
        obj: Any,
        transformation: str,
        *,
        format: type | None = None,
        model_options: Mapping[str, Any] | None = None,
    ) -> ModelOutputThunk[Any]:
        """Rewrite *obj* as *transformation* says; returns a lazy thunk of the new text."""
        self._warn_context()
        return await self._plain(Transform(obj, transformation), format, model_options)

    def transform(
        self,
        obj: Any,
        transformation: str,
        *,
        format: type | None = None,
        model_options: Mapping[str, Any] | None = None,
    ) -> ModelOutputThunk[Any]:
        """Synchronous :meth:`atransform`; returns a computed thunk. Not for use inside a running loop."""
        return self._run_sync(
            self._plain(Transform(obj, transformation), format, model_options, resolve=True), "atransform"
        )

    async def _plain(
        self,
        action: Any,
        format: type | None,
        model_options: Mapping[str, Any] | None,
        *,
        resolve: bool = False,
    ) -> ModelOutputThunk[Any]:
        out = await self._generate(action, None, None, False, format, model_options)
        assert isinstance(out, ModelOutputThunk)
        if resolve:
            await _resolved(out)
        return out

    # -- lifetime ----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the backend's resources (if it has an ``aclose()``)."""
        guard = self._guards.pop(asyncio.get_running_loop(), None)
        if guard is not None and guard is not asyncio.current_task():
            guard.cancel()
        aclose = getattr(self.backend, "aclose", None)
        if callable(aclose):
            await aclose()

    def close(self) -> None:
        """Close the backend and the private loop the sync methods use. Idempotent.

        Inside a running loop this closes only the private loop; the backend is closed
        when that loop shuts down, or at once with ``await session.aclose()``.
        """
        loop, self._sync_loop = self._sync_loop, None
        if _in_running_loop():
            if loop is not None and self._finalizer is not None:
                self._finalizer()
            return
        if loop is not None and self._finalizer is not None:
            self._finalizer()  # closes the backend on its loop, then the loop
        elif callable(getattr(self.backend, "aclose", None)):
            asyncio.run(self.aclose())

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"Session(backend={self.backend!r}, ctx={self.ctx!r})"


async def _close_at_shutdown(session: Session) -> None:
    try:
        await asyncio.get_running_loop().create_future()
    finally:
        await session.aclose()


async def _resolved(out: ModelOutputThunk[Any] | SamplingResult) -> None:
    """Wait until *out*'s generation has finished (sync twins return computed results)."""
    thunk = out.result if isinstance(out, SamplingResult) else out
    try:
        await thunk.avalue()
    except BaseException:
        thunk.cancel()
        raise


def _as_component(action: Any) -> Any:
    if isinstance(action, str):
        return CBlock(action)
    if not callable(getattr(action, "format_for_llm", None)):
        raise TypeError(
            "aact() needs a component (anything with format_for_llm()) or a string, "
            f"got {type(action).__name__}"
        )
    return action


# -- start_session ------------------------------------------------------------------------


def _backend_from_name(
    name: str, model_id: str | None, backend_kwargs: dict[str, Any]
) -> tuple[Backend, Callable[[], Backend] | None, Callable[[], Awaitable[None]] | None]:
    """The backend that *name* stands for in ``backends.registry``, built from *model_id* and
    *backend_kwargs*; a factory for another like it (a server backend is bound to one event
    loop), or ``None``; and the check to run before the session's first request, or ``None``."""
    registry = importlib.import_module("backends.registry")
    try:
        entry = registry.entry(name)
    except ValueError as exc:
        raise ValueError(f"{exc}; or pass start_session a backend object") from None

    def make() -> Backend:
        return typing.cast("Backend", entry.create(model_id, **backend_kwargs))

    backend = make()
    if not entry.check_reachable:
        return backend, make if entry.needs_server else None, None

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

    return backend, make if entry.needs_server else None, check_reachable


def start_session(
    backend_name: str | Backend = "ollama",
    model_id: str | None = None,
    *,
    ctx: Context | None = None,
    model_options: Mapping[str, Any] | None = None,
    **backend_kwargs: Any,
) -> Session:
    """Start a session on a backend named by *backend_name*: "ollama" (default), "openai" or "scripted"
    (``backends.registry`` lists them).

    * "ollama": ``OllamaBackend`` at ``OLLAMA_HOST`` or http://localhost:11434. If the
      server is not reachable, the session's first request fails with a
      ``ConnectionError`` naming the URL and the alternatives.
    * "openai": ``OpenAIBackend`` for an OpenAI-compatible server (``base_url=...``).
    * "scripted": ``ScriptedBackend(deltas, delay=...)``, no server needed; ``deltas``
      defaults to a short canned reply.

    *model_id* and *backend_kwargs* go to the backend's constructor. A backend object may
    be passed instead of a name. *ctx* defaults to a ``SimpleContext``; *model_options*
    apply to every call of the session.
    """
    if not isinstance(backend_name, str):
        return Session(backend_name, ctx, model_options=model_options)
    backend, factory, preflight = _backend_from_name(backend_name, model_id, backend_kwargs)
    session = Session(backend, ctx, model_options=model_options)
    session._backend_factory = factory
    session._preflight = preflight
    session._close_with_loop()
    return session
