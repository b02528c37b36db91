"""Every Python block of the README and of the manual runs, and prints what the page says it prints.

The pages are ``README.md`` and every ``docs/**/*.md``. A ```python block is executed in a
fresh namespace (against ``ScriptedBackend``; no server). When a ```text block follows it
(only blank lines between), the block's standard output must equal that text. A block
right after a ``<!-- no-run -->`` line is only compiled: that marker is for the examples that need a real model server, or
would change the test process (its GC settings, its event loop). Shell, TOML and YAML
blocks are not run.

The pages also keep the promises the README makes about itself: at most 250 lines, every
manual page reachable from the site's navigation, and no reference to the project's issue
tracker (a reader of the repository cannot look one up). The API reference's tables list
exactly the ``__all__`` of ``engine``, ``operators`` and ``backends``. A block that
registers a chunking alias leaves the registry as it found it.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import attrs
import pytest

from operators import CHUNKING_ALIASES

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MKDOCS_YML = ROOT / "mkdocs.yml"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
NO_RUN = "<!-- no-run -->"
FENCE = re.compile(r"^```(\w*)\s*$")
README_MAX_LINES = 250
ISSUE_REFERENCE = re.compile(r"\bissues?\s+#?\d+|(?<![\w&/])#\d+\b", re.IGNORECASE)


@attrs.frozen
class Block:
    line: int
    """1-based line of the opening fence."""
    code: str
    run: bool
    expected_output: str | None


def python_blocks(text: str, name: str = "<page>") -> list[Block]:
    """The ```python blocks of a markdown *text*, with their run marker and expected output."""
    lines = text.splitlines()
    fences: list[tuple[int, int, str, str]] = []  # (opening index, closing index, language, body)
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        assert end is not None, f"{name}:{i + 1}: a code block is never closed"
        fences.append((i, end, opening.group(1), "\n".join(lines[i + 1 : end])))
        i = end + 1
    blocks = []
    for k, (start, end, language, body) in enumerate(fences):
        if language != "python":
            continue
        before = [line for line in lines[:start] if line.strip()]
        run = not (before and before[-1].strip() == NO_RUN)
        expected = None
        if k + 1 < len(fences):
            next_start, _, next_language, next_body = fences[k + 1]
            between = lines[end + 1 : next_start]
            if next_language == "text" and not any(line.strip() for line in between):
                expected = next_body
        blocks.append(Block(start + 1, body, run, expected))
    return blocks


def page_name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


BLOCKS = [
    (page_name(page), block)
    for page in PAGES
    for block in python_blocks(page.read_text(encoding="utf-8"), page_name(page))
]


def test_the_pages_teach_with_runnable_examples() -> None:
    assert (DOCS / "index.md").exists(), "the manual's home page, docs/index.md, is missing"
    readme = [block for name, block in BLOCKS if name == "README.md"]
    assert any(b.run and b.expected_output for b in readme), "the README should show a checked example"
    runnable = [block for _, block in BLOCKS if block.run]
    assert len(runnable) >= 20, f"the manual should have runnable python examples, found {len(runnable)}"


@pytest.mark.parametrize(("page", "block"), BLOCKS, ids=[f"{name}:{b.line}" for name, b in BLOCKS])
def test_python_block(page: str, block: Block, capsys: pytest.CaptureFixture[str]) -> None:
    code = compile(block.code, f"{page}:{block.line}", "exec", dont_inherit=True)  # a script of its own
    if not block.run:
        return  # needs a real server: compiling it is all that can be checked here
    namespace = {"__name__": "__docs__"}
    aliases = dict(CHUNKING_ALIASES)
    try:
        exec(code, namespace)
    finally:  # a block that registers a chunking alias leaves the registry as the other tests know it
        CHUNKING_ALIASES.clear()
        CHUNKING_ALIASES.update(aliases)
    out = capsys.readouterr().out
    if block.expected_output is not None:
        assert out.rstrip("\n") == block.expected_output.rstrip("\n")


def test_the_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; the manual in docs/ is for the rest"


def test_every_manual_page_is_in_the_navigation() -> None:
    nav = MKDOCS_YML.read_text(encoding="utf-8")
    missing = [page_name(p) for p in PAGES[1:] if p.relative_to(DOCS).as_posix() not in nav]
    assert not missing, f"pages not listed under nav: in mkdocs.yml: {missing}"


def reference_names(package: str) -> set[str]:
    """The names in the first column of the API reference's table for *package*."""
    text = (DOCS / "reference.md").read_text(encoding="utf-8")
    section = text.split(f"## `{package}`\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`(\w+)`", row.split(" | ")[0])}


@pytest.mark.parametrize("package", ["engine", "operators", "backends"])
def test_the_reference_lists_every_public_name(package: str) -> None:
    module = importlib.import_module(package)
    listed = reference_names(package)
    assert listed, f"docs/reference.md has no table for {package}"
    assert sorted(listed - set(module.__all__)) == [], f"listed but not in {package}.__all__"
    assert sorted(set(module.__all__) - listed) == [], f"in {package}.__all__ but not in docs/reference.md"
    assert all(hasattr(module, name) for name in listed)


@pytest.mark.parametrize("page", PAGES, ids=page_name)
def test_no_page_points_at_the_issue_tracker(page: Path) -> None:
    found = [
        f"{page_name(page)}:{number}: {line.strip()}"
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        if ISSUE_REFERENCE.search(line)
    ]
    assert not found, "state the rule instead of pointing at an issue:\n" + "\n".join(found)


def test_the_block_parser() -> None:
    sample = "\n".join(
        [
            "```python",
            "print(1)",
            "```",
            "",
            "```text",
            "1",
            "```",
            "prose",
            NO_RUN,
            "```python",
            "import nowhere",
            "```",
            "```sh",
            "make demo",
            "```",
            "```python",
            "x = 2",
            "```",
            "words",
            "```text",
            "not its output",
            "```",
            "```yaml",
            "a: 1",
            "```",
            "```toml",
            "b = 2",
            "```",
        ]
    )
    blocks = python_blocks(sample)
    assert [(b.line, b.code, b.run, b.expected_output) for b in blocks] == [
        (1, "print(1)", True, "1"),
        (10, "import nowhere", False, None),
        (16, "x = 2", True, None),
    ]


@pytest.mark.parametrize(
    ("line", "points_at_an_issue"),
    [
        ("fixed in issue 12", True),
        ("see Issues #7", True),
        ("as #42 says", True),
        ("the issue tracker", False),
        ("[the order](streaming.md#the-order-of-events)", False),
        ("&#8212; an entity", False),
        ("3 issues remain", False),
    ],
)
def test_the_issue_reference_pattern(line: str, points_at_an_issue: bool) -> None:
    assert bool(ISSUE_REFERENCE.search(line)) is points_at_an_issue
