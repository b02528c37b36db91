"""Sessions: a backend, a context, and Mellea's async API over them.

``start_session()`` (:mod:`engine.session_start`) builds a :class:`Session` for a backend
named by a string ("ollama", the default, "openai" or "scripted"); the arguments the
methods share are checked by :mod:`engine.session_arguments`.

What the methods return, as in Mellea 0.7 and 0.8:

* ``ainstruct``/``aact``/``aquery``/``atransform`` with the default strategy
  (``RejectionSamplingStrategy(loop_budget=2)``) generate, validate any requirements,
  retry, and return a **computed** thunk (or, with ``return_sampling_results=True``, the
  whole :class:`~engine.sampling.SamplingResult`).
* ``strategy=None`` returns the **lazy** thunk at once, its generation running in the
  background (``is_computed()`` is False): the way to stream with ``astream()``.
  ``await_result=True`` makes it computed.
* ``achat`` returns the assistant :class:`~engine.core.components.Message`.
* ``parsed_repr`` of a thunk is its text, or with ``format=`` the text parsed into that type
  (:mod:`engine.core.typed_output`; the schema is sent to the server).

Every async method has a synchronous twin with the same parameters (``instruct``,
``chat``, ``act``, ``validate``, ``query``, ``transform``) that returns computed results;
they, and any coroutine, run through :meth:`Session.run`. Every method refuses an empty
prompt with a ``ValueError`` before anything is sent.

Why one module of over 600 lines: it is the :class:`Session` class (about 630 lines)
and little else. Each async method sits with its ``@overload`` signatures, its private
implementation and its sync twin, which repeat one parameter list that must change in
step (Mellea 0.7 and 0.8 name every parameter), so a reader and a reviewer see all
four forms of a method at once; httpx keeps ``Client`` and ``AsyncClient`` in one file
for the same reason. Moving the twins into a mixin in another module would hide from the
type checker the private methods they call, unless that module imported this one (an
import cycle) or repeated their signatures. What is another concept lives elsewhere:
building a session from a backend name (:mod:`engine.session_start`), the shared
argument checks (:mod:`engine.session_arguments`), the sync runner
(:mod:`engine.sync_runner`), sampling (:mod:`engine.sampling`).
"""

from __future__ import annotations

import copy
import logging
import typing
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, overload

from engine.checks import FieldCheck
from engine.core import arguments, telemetry, typed_output
from engine.core.components import (
    CBlock,
    Instruction,
    Message,
    Query,
    Role,
    Transform,
    fill_user_variables,
    text_of,
)
from engine.core.context import Context, SimpleContext
from engine.core.options import ModelOption
from engine.core.requirements import Requirement, ValidationResult, as_requirements, validate_all
from engine.core.thunk import ModelOutputThunk
from engine.core.typed_output import OutputFormat
from engine.sampling import RejectionSamplingStrategy, SamplingResult
from engine.session_arguments import (
    BACKEND_ALLOWED,
    CONTEXT_ALLOWED,
    DEFAULT_STRATEGY,
    DefaultStrategy,
    Requirements,
    StrategyArg,
    as_component,
    check_format,
    check_options,
    require_text,
)
from engine.sync_runner import SyncRunner
from engine.sync_runner import in_running_loop as _in_running_loop

if TYPE_CHECKING:
    from engine.core.backend import Backend

__all__ = [
    "CHAT_CONTEXT_WARNING",
    "MelleaSession",
    "Session",
    "set_preflight",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

CHAT_CONTEXT_WARNING: Final = (
    "Not using a SimpleContext with asynchronous requests could cause unexpected results "
    "due to stale contexts. Ensure you await between requests."
)
"""Logged (once per session) when an async method runs on a context that is not a SimpleContext."""


class Session:
    """A backend and the current context; every method sends the context's view along.

    Build one with :func:`start_session`, or directly from any backend:
    ``Session(ScriptedBackend(["hi"]))``. ``ctx`` defaults to a ``SimpleContext`` (safe
    for concurrent requests); the session replaces ``self.ctx`` with the new context
    after every generation. ``model_options`` are merged under each call's own.

    Lifetime: one session serves any number of event loops, one after another or at
    once: the sync methods (and :meth:`run`) use a private event loop, and the coroutine
    methods run on whichever loop awaits them (``asyncio.run`` twice, a sync twin in
    between). The HTTP backends keep one connection pool per event loop and close it when
    that loop shuts down (``asyncio.run`` returning), so seed code that never closes its
    session leaks nothing. ``close()`` (or the ``with`` block, or garbage collection of a
    session whose sync methods ran) closes the private loop and the backend for good;
    ``await session.aclose()`` (or ``async with``) closes the backend from a coroutine. A
    backend of your own with an ``aclose()`` is closed only by these.
    """

    def __init__(
        self,
        backend: Backend,
        ctx: Context | None = None,
        *,
        model_options: Mapping[str, Any] | None = None,
        validation_backend: Backend | None = None,
    ) -> None:
        arguments.has_method("backend", backend, "generate_from_context", BACKEND_ALLOWED)
        if ctx is not None:
            arguments.instance("ctx", ctx, Context, CONTEXT_ALLOWED)
        arguments.optional_mapping("model_options", model_options)
        if validation_backend is not None:
            arguments.has_method(
                "validation_backend", validation_backend, "generate_from_context", BACKEND_ALLOWED
            )
        self.backend = backend
        self.ctx: Context = ctx if ctx is not None else SimpleContext()
        self.model_options: dict[str, Any] = dict(model_options or {})
        self.validation_backend = validation_backend
        """The backend that judges requirements (LLM-as-judge); ``None`` means ``backend``."""
        self._warned_ctx = False
        self._preflight: Callable[[], Awaitable[None]] | None = None
        aclose = getattr(backend, "aclose", None)
        self._runner = SyncRunner(aclose if callable(aclose) else None)
        self._finalizer = weakref.finalize(self, self._runner.close)

    # -- running from sync code -------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run *coro* to completion from synchronous code and return its result.

        Every sync twin is ``self.run(<its async form>)``. From plain code the coroutine runs
        on this session's private event loop (kept between calls, closed by :meth:`close`);
        from inside a running event loop it runs on a fresh loop in a helper thread while
        the caller blocks, as Mellea does (await the async form there instead when you can).
        """
        return self._runner.run(coro)

    # -- plumbing ------------------------------------------------------------------

    def _warn_context(self) -> None:
        if not self._warned_ctx and not isinstance(self.ctx, SimpleContext):
            self._warned_ctx = True
            logger.warning(CHAT_CONTEXT_WARNING)

    def _options(self, model_options: Mapping[str, Any] | None) -> dict[str, Any]:
        return ModelOption.merge(self.model_options, dict(model_options) if model_options else None)

    async def _ready(self) -> None:
        """Before the first request: the backend's reachability check, once."""
        preflight = self._preflight
        if preflight is not None:
            await preflight()
            self._preflight = None

    @telemetry.session_call("generate")
    async def _generate(
        self,
        action: Any,
        requirements: Requirements,
        strategy: StrategyArg,
        return_sampling_results: bool,
        await_result: bool,
        format: OutputFormat,
        model_options: Mapping[str, Any] | None,
    ) -> ModelOutputThunk[Any] | SamplingResult:
        check_options(strategy, return_sampling_results, await_result, format, model_options)
        reqs = as_requirements(requirements)
        if isinstance(strategy, DefaultStrategy):
            strategy = RejectionSamplingStrategy(loop_budget=2)
        if strategy is None and return_sampling_results:
            raise ValueError(
                "return_sampling_results=True needs a sampling strategy; drop strategy=None "
                "or set return_sampling_results=False"
            )
        await self._ready()
        options = self._options(model_options)
        if strategy is None and _streams_structured(reqs, format):
            return await self._stream_structured(action, reqs, format, options)
        if strategy is None:
            if reqs:
                logger.debug("strategy=None: %d requirement(s) are rendered but not validated", len(reqs))
            thunk, self.ctx = await self.backend.generate_from_context(
                action, self.ctx, format=format, model_options=options
            )
            if await_result:
                await _resolved(thunk)
                _parse_into(thunk, format)
            else:
                _parse_when_computed(thunk, format)
            return thunk
        result = await strategy.sample(
            action,
            context=self.ctx,
            backend=self.backend,
            requirements=reqs,
            validation_backend=self.validation_backend,
            format=format,
            model_options=options,
        )
        _parse_into(result.result, format)
        self.ctx = result.result_ctx
        return result if return_sampling_results else result.result

    async def _stream_structured(
        self, action: Any, reqs: list[Requirement], format: OutputFormat, options: Mapping[str, Any]
    ) -> ModelOutputThunk[Any]:
        """``strategy=None`` with a format and a ``FieldCheck``: one streaming run that checks
        each record as it closes (see :func:`_streams_structured`)."""
        from engine.assembly import stream_with_chunking  # the session is loaded before the pipeline

        result = await stream_with_chunking(
            action,
            self.backend,
            self.ctx,
            requirements=reqs,
            chunking="json",
            validation_backend=self.validation_backend,
            format=format,
            model_options=options,
        )
        await result.acomplete()
        thunk = result.as_thunk()
        thunk.parsed_repr = result.parsed if result.completed else result.partial
        self.ctx = result.ctx
        return thunk

    # -- instruct --------------------------------------------------------------------

    @overload
    async def ainstruct(
        self,
        description: str,
        *,
        requirements: Requirements = ...,
        strategy: StrategyArg = ...,
        user_variables: Mapping[str, Any] | None = ...,
        return_sampling_results: Literal[False] = ...,
        format: OutputFormat = ...,
        model_options: Mapping[str, Any] | None = ...,
        await_result: bool = ...,
    ) -> ModelOutputThunk[Any]: ...

    @overload
    async def ainstruct(
        self,
        description: str,
        *,
        requirements: Requirements = ...,
        strategy: StrategyArg = ...,
        user_variables: Mapping[str, Any] | None = ...,
        return_sampling_results: Literal[True],
        format: OutputFormat = ...,
        model_options: Mapping[str, Any] | None = ...,
        await_result: bool = ...,
    ) -> SamplingResult: ...

    async def ainstruct(
        self,
        description: str,
        *,
        requirements: Requirements = None,
        strategy: StrategyArg = DEFAULT_STRATEGY,
        user_variables: Mapping[str, Any] | None = None,
        return_sampling_results: bool = False,
        format: OutputFormat = None,
        model_options: Mapping[str, Any] | None = None,
        await_result: bool = False,
    ) -> ModelOutputThunk[Any] | SamplingResult:
        """Instruct the model; ``{{name}}`` placeholders are filled from *user_variables*.

        With the default strategy, ``RejectionSamplingStrategy(loop_budget=2)``, this
        generates, validates the requirements (if any) and retries, and returns the chosen
        output **computed**, or the whole :class:`SamplingResult` (every attempt,
        ``success``) with ``return_sampling_results=True``. With ``strategy=None`` it
        returns the **lazy** thunk at once, its generation running in the background (the
        requirements are rendered into the prompt, not validated); ``await_result=True``
        waits for it. *format* (a type or a JSON schema) is sent to the server and the
        answer parsed into ``parsed_repr``.
        """
        self._warn_context()
        return await self._instruct(
            description,
            requirements,
            strategy,
            user_variables,
            return_sampling_results,
            await_result,
            format,
            model_options,
        )

    async def _instruct(
        self,
        description: str,
        requirements: Requirements,
        strategy: StrategyArg,
        user_variables: Mapping[str, Any] | None,
        return_sampling_results: bool,
        await_result: bool,
        format: OutputFormat,
        model_options: Mapping[str, Any] | None,
        method: str = "ainstruct",
    ) -> ModelOutputThunk[Any] | SamplingResult:
        arguments.text("description", description)
        arguments.optional_mapping("user_variables", user_variables)
        text = fill_user_variables(description, user_variables)
        require_text(text, "description", method)
        reqs = as_requirements(requirements)
        return await self._generate(
            Instruction(text, requirements=reqs),
            reqs,
            strategy,
            return_sampling_results,
            await_result,
            format,
            model_options,
        )

    @overload
    def instruct(
        self,
        description: str,
        *,
        requirements: Requirements = ...,
        strategy: StrategyArg = ...,
        user_variables: Mapping[str, Any] | None = ...,
        return_sampling_results: Literal[False] = ...,
        format: OutputFormat = ...,
        model_options: Mapping[str, Any] | None = ...,
        await_result: bool = ...,
    ) -> ModelOutputThunk[Any]: ...

    @overload
    def instruct(
        self,
        description: str,
        *,
        requirements: Requirements = ...,
        strategy: StrategyArg = ...,
        user_variables: Mapping[str, Any] | None = ...,
        return_sampling_results: Literal[True],
        format: OutputFormat = ...,
        model_options: Mapping[str, Any] | None = ...,
        await_result: bool = ...,
    ) -> SamplingResult: ...

    def instruct(
        self,
        description: str,
        *,
        requirements: Requirements = None,
        strategy: StrategyArg = DEFAULT_STRATEGY,
        user_variables: Mapping[str, Any] | None = None,
        return_sampling_results: bool = False,
        format: OutputFormat = None,
        model_options: Mapping[str, Any] | None = None,
        await_result: bool = True,
    ) -> ModelOutputThunk[Any] | SamplingResult:
        """Synchronous :meth:`ainstruct`; always returns a computed result."""
        arguments.flag("await_result", await_result)
        return self.run(
            self._instruct(
                description,
                requirements,
                strategy,
                user_variables,
                return_sampling_results,
                True,
                format,
                model_options,
                "instruct",
            )
        )

    # -- act ---------------------------------------------------------------------------

    @overload
    async def aact(
        self,
        action: Any,
        *,
        requirements: Requirements = ...,
        strategy: StrategyArg = ...,
        return_sampling_results: Literal[False] = ...,
        format: OutputFormat = ...,
        model_options: Mapping[str, Any] | None = ...,
        await_result: bool = ...,
    ) -> ModelOutputThunk[Any]: ...

    @overload
    async def aact(
        self,
        action: Any,
        *,
        requirements: Requirements = ...,
        strategy: StrategyArg = ...,
        return_sampling_results: Literal[True],
        format: OutputFormat = ...,
        model_options: Mapping[str, Any] | None = ...,
        await_result: bool = ...,
    ) -> SamplingResult: ...

    async def aact(
        self,
        action: Any,
        *,
        requirements: Requirements = None,
        strategy: StrategyArg = DEFAULT_STRATEGY,
        return_sampling_results: bool = False,
        format: OutputFormat = None,
        model_options: Mapping[str, Any] | None = None,
        await_result: bool = False,
    ) -> ModelOutputThunk[Any] | SamplingResult:
        """Generate from any component (anything with ``format_for_llm()``); a plain
        string is sent as a ``CBlock``. Results, strategies and *format* as in :meth:`ainstruct`."""
        self._warn_context()
        return await self._act(
            action, requirements, strategy, return_sampling_results, await_result, format, model_options
        )

    async def _act(
        self,
        action: Any,
        requirements: Requirements,
        strategy: StrategyArg,
        return_sampling_results: bool,
        await_result: bool,
        format: OutputFormat,
        model_options: Mapping[str, Any] | None,
        method: str = "aact",
    ) -> ModelOutputThunk[Any] | SamplingResult:
        component = as_component(action, method)
        require_text(text_of(component), "action", method)
        return await self._generate(
            component, requirements, strategy, return_sampling_results, await_result, format, model_options
        )

    @overload
    def act(
        self,
        action: Any,
        *,
        requirements: Requirements = ...,
        strategy: StrategyArg = ...,
        return_sampling_results: Literal[False] = ...,
        format: OutputFormat = ...,
        model_options: Mapping[str, Any] | None = ...,
        await_result: bool = ...,
    ) -> ModelOutputThunk[Any]: ...

    @overload
    def act(
        self,
        action: Any,
        *,
        requirements: Requirements = ...,
        strategy: StrategyArg = ...,
        return_sampling_results: Literal[True],
        format: OutputFormat = ...,
        model_options: Mapping[str, Any] | None = ...,
        await_result: bool = ...,
    ) -> SamplingResult: ...

    def act(
        self,
        action: Any,
        *,
        requirements: Requirements = None,
        strategy: StrategyArg = DEFAULT_STRATEGY,
        return_sampling_results: bool = False,
        format: OutputFormat = None,
        model_options: Mapping[str, Any] | None = None,
        await_result: bool = True,
    ) -> ModelOutputThunk[Any] | SamplingResult:
        """Synchronous :meth:`aact`; always returns a computed result."""
        arguments.flag("await_result", await_result)
        return self.run(
            self._act(
                action, requirements, strategy, return_sampling_results, True, format, model_options, "act"
            )
        )

    # -- chat ----------------------------------------------------------------------------

    async def achat(
        self,
        content: str,
        role: Role = "user",
        *,
        user_variables: Mapping[str, Any] | None = None,
        format: OutputFormat = None,
        model_options: Mapping[str, Any] | None = None,
    ) -> Message:
        """Send one chat message, wait for the reply, and return it: the assistant ``Message``.

        Both turns (the message and the reply) are appended to the session's context, so
        with a ``ChatContext`` the next call sees this exchange. The reply's ``thunk`` is
        the generation (its ``generation`` has timings and usage); with *format* the reply's
        content is the JSON text and ``reply.thunk.parsed_repr`` the parsed value.
        """
        self._warn_context()
        return await self._chat(content, role, user_variables, format, model_options)

    @telemetry.session_call("chat")
    async def _chat(
        self,
        content: str,
        role: Role,
        user_variables: Mapping[str, Any] | None,
        format: OutputFormat,
        model_options: Mapping[str, Any] | None,
        method: str = "achat",
    ) -> Message:
        arguments.text("content", content)
        arguments.one_of("role", role, typing.get_args(Role))
        arguments.optional_mapping("user_variables", user_variables)
        check_format(format)
        arguments.optional_mapping("model_options", model_options)
        text = fill_user_variables(content, user_variables)
        require_text(text, "message", method)
        await self._ready()
        thunk, new_ctx = await self.backend.generate_from_context(
            Message(role, text), self.ctx, format=format, model_options=self._options(model_options)
        )
        await _resolved(thunk)
        reply = Message("assistant", thunk.value or "", thunk=thunk)
        thunk.parsed_repr = reply
        if not typed_output.is_free_text(format):
            _parse_into(thunk, format)
        self.ctx = new_ctx
        return reply

    def chat(
        self,
        content: str,
        role: Role = "user",
        *,
        user_variables: Mapping[str, Any] | None = None,
        format: OutputFormat = None,
        model_options: Mapping[str, Any] | None = None,
    ) -> Message:
        """Synchronous :meth:`achat`."""
        return self.run(self._chat(content, role, user_variables, format, model_options, "chat"))

    # -- validate ------------------------------------------------------------------------

    async def avalidate(
        self,
        requirements: Sequence[Requirement | str] | Requirement | str,
        *,
        output: Any = None,
        format: OutputFormat = None,
        model_options: Mapping[str, Any] | None = None,
    ) -> list[ValidationResult]:
        """Check *requirements* (in parallel) against *output*, or against the newest
        model output in the session's context when *output* is ``None``.

        *output* may be a thunk, a ``CBlock`` or a string. Requirements without a
        ``validation_fn`` are judged by the model (the session's ``validation_backend``
        or its backend).
        """
        return await self._validate(requirements, output, format, model_options)

    async def _validate(
        self,
        requirements: Sequence[Requirement | str] | Requirement | str,
        output: Any,
        format: OutputFormat,
        model_options: Mapping[str, Any] | None,
    ) -> list[ValidationResult]:
        reqs = as_requirements(requirements)
        if output is not None and not isinstance(output, (str, CBlock, ModelOutputThunk)):
            raise TypeError(
                "output must be a str, a CBlock, a ModelOutputThunk, or None (the session's newest "
                f"output); got {arguments.shown(output)}"
            )
        check_format(format)
        arguments.optional_mapping("model_options", model_options)
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
        format: OutputFormat = None,
        model_options: Mapping[str, Any] | None = None,
    ) -> list[ValidationResult]:
        """Synchronous :meth:`avalidate`."""
        return self.run(self._validate(requirements, output, format, model_options))

    # -- query and transform ---------------------------------------------------------

    async def aquery(
        self,
        obj: Any,
        query: str,
        *,
        strategy: StrategyArg = DEFAULT_STRATEGY,
        format: OutputFormat = None,
        model_options: Mapping[str, Any] | None = None,
        await_result: bool = False,
    ) -> ModelOutputThunk[Any]:
        """Ask *query* about *obj* (its ``format_for_llm()`` or ``str()``). Computed with the
        default strategy; ``strategy=None`` returns the lazy thunk (as :meth:`ainstruct`)."""
        self._warn_context()
        return await self._query(obj, query, strategy, await_result, format, model_options)

    async def _query(
        self,
        obj: Any,
        query: str,
        strategy: StrategyArg,
        await_result: bool,
        format: OutputFormat,
        model_options: Mapping[str, Any] | None,
        method: str = "aquery",
    ) -> ModelOutputThunk[Any]:
        arguments.text("query", query)
        require_text(query, "query", method)
        out = await self._generate(
            Query(obj, query), None, strategy, False, await_result, format, model_options
        )
        assert isinstance(out, ModelOutputThunk)
        return out

    def query(
        self,
        obj: Any,
        query: str,
        *,
        strategy: StrategyArg = DEFAULT_STRATEGY,
        format: OutputFormat = None,
        model_options: Mapping[str, Any] | None = None,
        await_result: bool = True,
    ) -> ModelOutputThunk[Any]:
        """Synchronous :meth:`aquery`; returns a computed thunk."""
        arguments.flag("await_result", await_result)
        return self.run(self._query(obj, query, strategy, True, format, model_options, "query"))

    async def atransform(
        self,
        obj: Any,
        transformation: str,
        *,
        strategy: StrategyArg = DEFAULT_STRATEGY,
        format: OutputFormat = None,
        model_options: Mapping[str, Any] | None = None,
        await_result: bool = False,
    ) -> ModelOutputThunk[Any]:
        """Rewrite *obj* as *transformation* says. Computed with the default strategy;
        ``strategy=None`` returns the lazy thunk (as :meth:`ainstruct`)."""
        self._warn_context()
        return await self._transform(obj, transformation, strategy, await_result, format, model_options)

    async def _transform(
        self,
        obj: Any,
        transformation: str,
        strategy: StrategyArg,
        await_result: bool,
        format: OutputFormat,
        model_options: Mapping[str, Any] | None,
        method: str = "atransform",
    ) -> ModelOutputThunk[Any]:
        arguments.text("transformation", transformation)
        require_text(transformation, "transformation", method)
        action = Transform(obj, transformation)
        out = await self._generate(action, None, strategy, False, await_result, format, model_options)
        assert isinstance(out, ModelOutputThunk)
        return out

    def transform(
        self,
        obj: Any,
        transformation: str,
        *,
        strategy: StrategyArg = DEFAULT_STRATEGY,
        format: OutputFormat = None,
        model_options: Mapping[str, Any] | None = None,
        await_result: bool = True,
    ) -> ModelOutputThunk[Any]:
        """Synchronous :meth:`atransform`; returns a computed thunk."""
        arguments.flag("await_result", await_result)
        return self.run(
            self._transform(obj, transformation, strategy, True, format, model_options, "transform")
        )

    # -- lifetime ----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the backend (if it has an ``aclose()``): an HTTP backend closes its
        connections on this loop and refuses new generations."""
        aclose = getattr(self.backend, "aclose", None)
        if callable(aclose):
            await aclose()

    def close(self) -> None:
        """Close the private loop the sync methods use, and the backend on it. Idempotent.

        A backend that was used only from coroutines is closed by ``await session.aclose()``
        or when its loop shuts down.
        """
        used = self._runner.started
        self._runner.close()  # closes the backend on its private loop, then the loop
        if not used and not _in_running_loop() and callable(getattr(self.backend, "aclose", None)):
            self._runner.run(self.aclose())
            self._runner.close()

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


MelleaSession = Session
"""Mellea's name for :class:`Session`: code written against Mellea's docs imports it."""


async def _resolved(thunk: ModelOutputThunk[Any]) -> None:
    """Wait until *thunk*'s generation has finished; cancel it if the wait is abandoned."""
    try:
        await thunk.avalue()
    except BaseException:
        thunk.cancel()
        raise


def _streams_structured(reqs: Sequence[Requirement], format: OutputFormat) -> bool:
    """``strategy=None`` streams with structured checks when a format is given and a
    requirement is a ``FieldCheck``: its values are checked as they close, the generation
    stops at the first that fails. The returned thunk holds the delivered text, and its
    ``parsed_repr`` the typed answer (the partial object of the records delivered before a
    failure). Without a ``FieldCheck``, ``strategy=None`` validates nothing, as in Mellea."""
    return not typed_output.is_free_text(format) and any(isinstance(req, FieldCheck) for req in reqs)


def _parse_into(thunk: ModelOutputThunk[Any], format: OutputFormat) -> None:
    """Set a computed thunk's ``parsed_repr``: its text, or the text parsed into *format*."""
    text = thunk.value or ""
    thunk.parsed_repr = typed_output.parse(text, format)


def _parse_when_computed(thunk: ModelOutputThunk[Any], format: OutputFormat) -> None:
    """Set a lazy thunk's ``parsed_repr`` when its generation completes.

    A text that does not fit *format* leaves ``parsed_repr`` None and logs why (the
    thunk's text stays readable; :func:`engine.core.typed_output.parse` raises it again).
    """

    def on_completed() -> None:
        try:
            _parse_into(thunk, format)
        except typed_output.OutputParseError as exc:
            logger.warning("parsed_repr left unset: %s", exc)

    thunk.deltas.subscribe(on_completed=on_completed, on_error=lambda _: None)


def set_preflight(session: Session, check: Callable[[], Awaitable[None]] | None) -> None:
    """Run *check* before *session*'s first request, once: :func:`~engine.session_start.start_session`'s
    reachability check of a backend it built from a name."""
    session._preflight = check
