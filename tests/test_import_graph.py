"""The module-level imports of ``engine``, ``operators`` and ``backends`` form no cycle.

A cycle makes the result of ``import x`` depend on which module of the cycle was
imported first (one of them meets the other half-initialised), so every module-level
import counts, those under ``if TYPE_CHECKING:`` included (a type-only cycle becomes
a real one the day a name is needed at run time). Imports inside functions are left
out: they run after every module has loaded, which is what makes them the way to
break a cycle. ``from pkg import name`` is an edge to ``pkg.name`` when that is a
module, else to ``pkg`` (its ``__init__``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = ("engine", "operators", "backends")


def _module_paths(root: Path = ROOT) -> dict[str, Path]:
    found = {}
    for package in FIRST_PARTY:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _top_level(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module loads: at its top level, or nested
    in module-level ``if``/``try``/``with`` blocks (``if TYPE_CHECKING:`` among them);
    not inside a function or a class."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If | ast.With | ast.AsyncWith):
            yield from _top_level(node.body)
            yield from _top_level(getattr(node, "orelse", []))
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _top_level(block)


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The first-party module *name* loads: itself, or its closest package."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _edges(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in _top_level(tree.body):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                package = ".".join([*base, node.module] if node.module else base)
            else:
                package = node.module or ""
            # ``from pkg import sub`` loads the submodule when there is one, else pkg itself.
            names = [
                f"{package}.{alias.name}" if f"{package}.{alias.name}" in modules else package
                for alias in node.names
            ]
        for name in names:
            target = _resolve(name, modules)
            if target is not None and target != module:
                targets.add(target)
    return targets


def _graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = _module_paths(root)
    return {module: _edges(module, path, modules) for module, path in modules.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of *graph* as ``[a, b, ..., a]``, or None (an iterative depth-first search)."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path: list[str] = [start]
        on_path = {start}
        stack = [iter(sorted(graph[start]))]
        while stack:
            step = next(stack[-1], None)
            if step is None:
                stack.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
            elif step in on_path:
                return [*path[path.index(step) :], step]
            elif step not in done:
                path.append(step)
                on_path.add(step)
                stack.append(iter(sorted(graph.get(step, ()))))
    return None


def test_module_level_imports_form_no_cycle() -> None:
    cycle = _find_cycle(_graph())
    assert cycle is None, "module-level imports form a cycle: " + " -> ".join(cycle or [])


def test_the_graph_covers_every_package() -> None:
    graph = _graph()
    assert {module.split(".", 1)[0] for module in graph} == set(FIRST_PARTY)
    assert "engine.core.asyncrx" in graph["engine.assembly"]  # a plain module-level import
    assert "engine.attempts" in graph["engine.result"]  # under TYPE_CHECKING


def test_the_checker_finds_a_cycle_through_type_checking_and_package_imports(tmp_path: Path) -> None:
    for package in FIRST_PARTY:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "engine" / "__init__.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from engine.a import A\n"
    )
    (tmp_path / "engine" / "a.py").write_text("from operators import b\n")
    (tmp_path / "operators" / "b.py").write_text("from . import c\n")
    (tmp_path / "operators" / "c.py").write_text(
        "from engine import A\n\ndef later():\n    import backends.d\n"
    )
    (tmp_path / "backends" / "d.py").write_text("import operators.c\n")
    graph = _graph(tmp_path)
    assert graph["operators.c"] == {"engine"}  # the import inside a function is no edge
    assert graph["backends.d"] == {"operators.c"}
    cycle = _find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1]
    start = cycle.index("engine")  # the search may enter the cycle anywhere
    assert [*cycle[start:-1], *cycle[:start]] == ["engine", "engine.a", "operators.b", "operators.c"]
    (tmp_path / "operators" / "c.py").write_text("def later():\n    from engine import A\n")
    assert _find_cycle(_graph(tmp_path)) is None
