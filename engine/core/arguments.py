"""Checks of the arguments of public calls: one wording, one rule, everywhere.

Every public entry point checks its arguments with these functions before it starts
anything (a generation, a task, a request): a wrong type is a ``TypeError``, a wrong
value a ``ValueError``, and the message names the argument, shows what was given and
says what is allowed, e.g.::

    validation_timeout must be a number of seconds > 0 (finite), or None for no
    deadline; got '2' (str)

``bool`` is not a number here: ``timeout=True`` is a mistake, never one second. Each
function returns the value it checked, so a caller can write
``limit = whole_number("limit", limit, minimum=0)``.
"""

from __future__ import annotations

import math
import numbers
import reprlib
from collections.abc import Collection, Mapping
from typing import Any, TypeVar

__all__ = [
    "component",
    "flag",
    "has_method",
    "instance",
    "one_of",
    "optional_mapping",
    "positive_seconds",
    "shown",
    "text",
    "whole_number",
]

T = TypeVar("T")

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60


def shown(value: object) -> str:
    """*value* as an error message shows it: a short repr and its type (``'2' (str)``)."""
    try:
        text = _repr.repr(value)
    except Exception:  # a broken __repr__ must not hide the real error
        text = "<unprintable>"
    return f"{text} ({type(value).__name__})"


def _refused(name: str, value: object, allowed: str) -> str:
    return f"{name} must be {allowed}; got {shown(value)}"


def positive_seconds(name: str, value: object, *, optional: bool = True) -> float | None:
    """A duration in seconds: a finite ``int`` or ``float`` > 0, or ``None`` (no deadline) when
    *optional*.

    NaN, infinities, zero and negatives are ``ValueError`` (a deadline that has passed
    before it starts, or never comes, is never what a caller meant; ``None`` says "no
    deadline"); a bool, a string or anything else is ``TypeError``.
    """
    allowed = "a number of seconds > 0 (finite)" + (", or None for no deadline" if optional else "")
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(_refused(name, value, allowed))
    if not (math.isfinite(value) and value > 0):
        raise ValueError(_refused(name, value, allowed))
    return value


def whole_number(name: str, value: object, *, minimum: int) -> int:
    """An integer (``int`` or another ``numbers.Integral``; not a bool) that is at least *minimum*."""
    allowed = f"a whole number >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(_refused(name, value, allowed))
    if value < minimum:
        raise ValueError(_refused(name, value, allowed))
    return int(value)


def flag(name: str, value: object) -> bool:
    """``True`` or ``False``, nothing else (``1``, ``"yes"`` and ``None`` are refused)."""
    if not isinstance(value, bool):
        raise TypeError(_refused(name, value, "True or False"))
    return value


def text(name: str, value: object, *, optional: bool = False) -> str | None:
    """A ``str`` (or ``None`` when *optional*)."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise TypeError(_refused(name, value, "a str" + (" or None" if optional else "")))
    return value


def one_of(name: str, value: object, allowed: Collection[str], *, optional: bool = False) -> str | None:
    """One of the strings *allowed* (or ``None`` when *optional*): another str is ``ValueError``,
    anything else ``TypeError``."""
    if value is None and optional:
        return None
    choices = ", ".join(map(repr, allowed)) + (", or None" if optional else "")
    if not isinstance(value, str):
        raise TypeError(_refused(name, value, f"one of {choices}"))
    if value not in allowed:
        raise ValueError(_refused(name, value, f"one of {choices}"))
    return value


def optional_mapping(name: str, value: object) -> Mapping[str, Any] | None:
    """``None`` or a mapping whose keys are strings (options, variables)."""
    allowed = "a mapping with str keys (e.g. a dict), or None"
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(_refused(name, value, allowed))
    for key in value:
        if not isinstance(key, str):
            raise TypeError(f"{name} must be {allowed}; got the key {shown(key)}")
    return value


def instance(name: str, value: object, cls: type[T] | tuple[type[T], ...], allowed: str) -> T:
    """An instance of *cls*; *allowed* says it in words (``"a StreamRetry, or None"``)."""
    if not isinstance(value, cls):
        raise TypeError(_refused(name, value, allowed))
    return value


def has_method(name: str, value: T, method: str, allowed: str) -> T:
    """An object (not a class) with a callable *method*, as duck-typed protocols are checked."""
    if isinstance(value, type) or not callable(getattr(value, method, None)):
        raise TypeError(_refused(name, value, allowed))
    return value


def component(name: str, value: T) -> T:
    """What a model can be asked: a ``str``, or a component (an object with ``format_for_llm()``)."""
    if isinstance(value, str):
        return value
    return has_method(name, value, "format_for_llm", "a str or a component (with format_for_llm())")
