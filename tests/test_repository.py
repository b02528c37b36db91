"""Rules of the repository as a whole: the distribution ships every package of the source tree
(a subpackage missing from the setuptools configuration would be absent from a built wheel, and
an editable install hides that), and no file points at the issue tracker, which readers of the
repository cannot see (state the rule instead)."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

from setuptools import find_packages

from tests.test_docs import ISSUE_REFERENCE

ROOT = Path(__file__).resolve().parent.parent
TOP_LEVEL = ("engine", "operators", "backends")


def test_the_wheel_configuration_finds_every_package_of_the_tree() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = config["packages"]
    assert isinstance(packages, dict), "an explicit package list leaves subpackages out of the wheel"
    found = set(find_packages(where=str(ROOT), include=packages["find"]["include"]))
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in TOP_LEVEL
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found == on_disk


def test_each_top_level_package_is_typed() -> None:
    for top in TOP_LEVEL:
        assert (ROOT / top / "py.typed").is_file()


# The pattern's own examples.
NOT_SCANNED = ("tests/test_docs.py",)


def test_no_file_points_at_the_issue_tracker() -> None:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    found = []
    for name in listed.stdout.splitlines():
        path = ROOT / name
        if name.startswith(NOT_SCANNED) or path.suffix not in {".py", ".md", ".toml", ".yml", ""}:
            continue
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if ISSUE_REFERENCE.search(line):
                found.append(f"{name}:{number}: {line.strip()}")
    assert not found, "state the rule instead of pointing at an issue:\n" + "\n".join(found)
