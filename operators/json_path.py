"""Paths into a JSON document: the small JSONPath subset that JSON chunking and field checks use.

A path starts at the document, ``$``, and takes steps: ``.name`` (or ``["any key"]``) a
field of an object, ``[n]`` an element of an array (from 0), ``[*]`` every element of an
array, ``.*`` every field of an object. ``$.products[*].price`` is the price of every
product. A *concrete* path (the place of one value, as chunks carry it) has no wildcards:
``$.products[3].price``.

Steps are kept as a tuple: a ``str`` is a field name, an ``int`` an index, and the two
wildcards are :data:`ANY_INDEX` and :data:`ANY_FIELD`.
"""

from __future__ import annotations

import json
import re
from typing import Final

__all__ = ["ANY_FIELD", "ANY_INDEX", "Step", "format_path", "matches", "parse_path"]


class _Wildcard:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


ANY_INDEX: Final = _Wildcard("[*]")
"""The step ``[*]``: every element of an array."""

ANY_FIELD: Final = _Wildcard(".*")
"""The step ``.*``: every field of an object."""

Step = str | int | _Wildcard

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STEP = re.compile(
    r"""\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)   # .name
      | \.(?P<any_field>\*)                  # .*
      | \[(?P<index>0|[1-9][0-9]*)\]         # [3]
      | \[(?P<any_index>\*)\]                # [*]
      | \[(?P<quoted>"(?:[^"\\]|\\.)*")\]    # ["any key"]
    """,
    re.VERBOSE,
)


def parse_path(path: str) -> tuple[Step, ...]:
    """The steps of *path* (``"$.products[*].price"`` → ``("products", ANY_INDEX, "price")``).

    Raises:
        TypeError: *path* is not a ``str``.
        ValueError: *path* is not in the subset, naming the offset where it stops fitting.
    """
    if not isinstance(path, str):
        raise TypeError(f"path must be a str such as '$.items[*]', got {type(path).__name__}: {path!r}")
    if not path.startswith("$"):
        raise ValueError(f"path {path!r} must start with '$' (the document), as in '$.items[*].name'")
    steps: list[Step] = []
    pos = 1
    while pos < len(path):
        match = _STEP.match(path, pos)
        if match is None:
            raise ValueError(
                f"path {path!r} is not in the supported subset at offset {pos} ({path[pos:]!r}); "
                'the steps allowed are .name, ["any key"], [n], [*] and .*'
            )
        if (name := match["name"]) is not None:
            steps.append(name)
        elif match["any_field"] is not None:
            steps.append(ANY_FIELD)
        elif (index := match["index"]) is not None:
            steps.append(int(index))
        elif match["any_index"] is not None:
            steps.append(ANY_INDEX)
        else:
            steps.append(json.loads(match["quoted"]))
        pos = match.end()
    return tuple(steps)


def format_path(steps: tuple[Step, ...] | list[Step]) -> str:
    """The path text of *steps*; ``parse_path(format_path(s)) == s``."""
    parts = ["$"]
    for step in steps:
        if isinstance(step, _Wildcard):
            parts.append(step.text)
        elif isinstance(step, int):
            parts.append(f"[{step}]")
        elif _NAME.fullmatch(step):
            parts.append(f".{step}")
        else:
            parts.append(f"[{json.dumps(step, ensure_ascii=False)}]")
    return "".join(parts)


def matches(pattern: tuple[Step, ...], concrete: tuple[Step, ...] | list[Step]) -> bool:
    """True when the concrete path *concrete* is one of the places *pattern* names."""
    if len(pattern) != len(concrete):
        return False
    for want, got in zip(pattern, concrete, strict=True):
        if want is ANY_INDEX:
            if not isinstance(got, int):
                return False
        elif want is ANY_FIELD:
            if not isinstance(got, str):
                return False
        elif want != got or type(want) is not type(got):
            return False
    return True
