"""The alias registry: the names ``chunking=`` accepts, each registered beside its strategy class.

A strategy and its alias are registered together, where the class is defined::

    @register_chunking("line")
    class LineChunking(ChunkingStrategy):
        def split(self, accumulated_text: str) -> list[str]: ...

so adding a chunker touches one file: ``stream_with_chunking(chunking="line")``,
``stream(chunking="line")``, ``Requirement(chunking="line")`` and the command line's
``--chunking`` choices all read :data:`CHUNKING_ALIASES` (the command line lists the
strategies imported before it builds its parser: the built-in ones).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, overload

from operators.chunking.strategy import ChunkingStrategy

__all__ = ["CHUNKING_ALIASES", "register_chunking", "resolve_chunking_strategy"]

CHUNKING_ALIASES: dict[str, type[ChunkingStrategy]] = {}
"""The names ``chunking=`` accepts, each with the strategy class it makes (filled by
:func:`register_chunking`, in the order the classes were registered)."""

StrategyClass = TypeVar("StrategyClass", bound=type[ChunkingStrategy])


def register_chunking(alias: str) -> Callable[[StrategyClass], StrategyClass]:
    """Class decorator: *alias* names the decorated :class:`ChunkingStrategy` subclass.

    ``chunking=alias`` then makes an instance with no arguments, so the class must be
    constructible so. Registering the same class under the same alias again (a module
    imported twice) changes nothing.

    Raises:
        TypeError: *alias* is not a ``str``, or the decorated object is not a
            ``ChunkingStrategy`` subclass.
        ValueError: *alias* is empty or contains whitespace, or it already names another class.
    """
    if not isinstance(alias, str):
        raise TypeError(f"register_chunking(alias=...) takes a str, got {type(alias).__name__}: {alias!r}")
    if not alias or any(ch.isspace() for ch in alias):
        raise ValueError(
            f"register_chunking(alias=...) takes a non-empty name without whitespace (it is typed on "
            f"the command line), got {alias!r}"
        )

    def register(cls: StrategyClass) -> StrategyClass:
        if not (isinstance(cls, type) and issubclass(cls, ChunkingStrategy)):
            raise TypeError(
                f"register_chunking({alias!r}) decorates a ChunkingStrategy subclass, got {cls!r}"
            )
        taken = CHUNKING_ALIASES.get(alias)
        if taken is not None and taken is not cls:
            raise ValueError(
                f"chunking alias {alias!r} already names {taken.__module__}.{taken.__qualname__}; "
                f"choose another alias for {cls.__module__}.{cls.__qualname__}"
            )
        CHUNKING_ALIASES[alias] = cls
        return cls

    return register


@overload
def resolve_chunking_strategy(chunking: None) -> None: ...
@overload
def resolve_chunking_strategy(chunking: str | ChunkingStrategy) -> ChunkingStrategy: ...
@overload
def resolve_chunking_strategy(chunking: str | ChunkingStrategy | None) -> ChunkingStrategy | None: ...


def resolve_chunking_strategy(chunking: str | ChunkingStrategy | None) -> ChunkingStrategy | None:
    """A strategy instance from a registered alias (``"sentence"``, ``"word"``,
    ``"paragraph"``, ...) or an instance; ``None`` stays ``None`` (no chunking: raw
    deltas, as in Mellea 0.8).

    Raises:
        ValueError: *chunking* is a ``str`` that no strategy registered.
        TypeError: *chunking* is neither a ``str``, a ``ChunkingStrategy`` nor ``None``.
    """
    if chunking is None or isinstance(chunking, ChunkingStrategy):
        return chunking
    if isinstance(chunking, str):
        strategy = CHUNKING_ALIASES.get(chunking)
        if strategy is not None:
            return strategy()
        raise ValueError(
            f"Unknown chunking alias {chunking!r}. Choose from: {', '.join(map(repr, CHUNKING_ALIASES))}, "
            "or pass a ChunkingStrategy instance."
        )
    raise TypeError(
        f"chunking must be one of {', '.join(map(repr, CHUNKING_ALIASES))}, a ChunkingStrategy instance "
        f"or None, got {type(chunking).__name__}"
    )
