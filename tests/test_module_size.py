"""No module of ``engine``, ``operators`` or ``backends`` is over 600 lines, unless its
docstring argues why (one concept per module: past that size a module holds several).

An exception that has come under the limit fails too, so the list cannot go stale.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "operators", "backends")
LIMIT = 600

# Modules allowed over the limit; each says why in its docstring ("over 600 lines").
ARGUED = ("engine/session.py",)


def _sizes() -> dict[str, int]:
    return {
        path.relative_to(ROOT).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def test_no_module_is_over_the_limit() -> None:
    over = {path: lines for path, lines in _sizes().items() if lines > LIMIT}
    unexplained = {path: lines for path, lines in over.items() if path not in ARGUED}
    assert not unexplained, f"modules over {LIMIT} lines (split them by concept): {unexplained}"


@pytest.mark.parametrize("path", ARGUED)
def test_every_exception_is_still_needed(path: str) -> None:
    lines = _sizes().get(path)
    assert lines is not None and lines > LIMIT, (
        f"{path} is no longer over {LIMIT} lines: drop it from the exceptions"
    )


@pytest.mark.parametrize("path", ARGUED)
def test_every_argued_exception_says_why(path: str) -> None:
    docstring = ast.get_docstring(ast.parse((ROOT / path).read_text(encoding="utf-8"))) or ""
    assert f"over {LIMIT} lines" in docstring, f"{path}: its docstring must say why it is over {LIMIT} lines"
