"""The layering, checked on the source: a lower layer never imports a higher one.

::

    engine (top: streaming, sessions, sampling, checks, generative, CLI)
       │ imports
       ├──────────────► operators ──┐
       ├──────────────► backends ───┤ import only
       ▼                            ▼
    engine.core (options, components, context, asyncrx, thunk, backend, requirements, events)

Every import statement counts, including those inside functions and under
``TYPE_CHECKING``: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = ("engine", "operators", "backends")

# Layer of a module -> the first-party packages it may import from.
ALLOWED: dict[str, tuple[str, ...]] = {
    "engine.core": ("engine.core",),
    "operators": ("engine.core", "operators"),
    "backends": ("engine.core", "backends"),
    "engine": ("engine", "operators", "backends"),
}


def _layer(module: str) -> str:
    if module == "engine.core" or module.startswith("engine.core."):
        return "engine.core"
    return module.split(".", 1)[0]


def _modules() -> list[tuple[str, Path]]:
    found = []
    for package in FIRST_PARTY:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found.append((".".join(parts), path))
    return found


def _imports(module: str, path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            out.append((node.lineno, name))
    return [(line, name) for line, name in out if name.split(".", 1)[0] in FIRST_PARTY]


def _allowed(layer: str, imported: str) -> bool:
    return any(imported == p or imported.startswith(p + ".") for p in ALLOWED[layer])


@pytest.mark.parametrize(("module", "path"), _modules(), ids=lambda v: v if isinstance(v, str) else "")
def test_no_module_imports_a_higher_layer(module: str, path: Path) -> None:
    layer = _layer(module)
    wrong = [
        f"{path.name}:{line} imports {name}"
        for line, name in _imports(module, path)
        if not _allowed(layer, name)
    ]
    assert not wrong, f"{module} is in layer {layer!r}, which may import only {ALLOWED[layer]}: {wrong}"


def test_the_checker_catches_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from engine.assembly import stream_with_chunking\nimport backends.ollama\n")
    names = [name for _, name in _imports("operators.bad", bad)]
    assert names == ["engine.assembly", "backends.ollama"]
    assert not _allowed("operators", "engine.assembly")
    assert not _allowed("engine.core", "backends.ollama")
    assert _allowed("backends", "engine.core.thunk")


def test_every_layer_has_modules() -> None:
    layers = {_layer(module) for module, _ in _modules()}
    assert layers == set(ALLOWED)


def test_the_gateway_imports_nothing_of_the_command_line_package() -> None:
    """The gateway is a service: it must not depend on the ``rxllm`` command's views and texts."""
    wrong = [
        f"{path.name}:{line} imports {name}"
        for module, path in _modules()
        if module == "engine.gateway" or module.startswith("engine.gateway.")
        for line, name in _imports(module, path)
        if name == "engine.cli" or name.startswith("engine.cli.")
    ]
    assert not wrong, wrong
