"""The distribution ships every package of the source tree: a subpackage missing from the
setuptools configuration would be absent from a built wheel (an editable install hides that)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

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
