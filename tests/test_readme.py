"""Every Python block in README.md runs, and prints what the README says it prints.

A ```python block is executed in a fresh namespace (against ``ScriptedBackend``; no
server). When a ```text block follows it (only blank lines between), the block's
standard output must equal that text. A block right after a ``<!-- no-run -->``
line is only compiled: that marker is for the examples that need a real model server.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import attrs
import pytest

README = Path(os.environ.get("RXLLM_README", Path(__file__).resolve().parent.parent / "README.md"))
NO_RUN = "<!-- no-run -->"
FENCE = re.compile(r"^```(\w*)\s*$")


@attrs.frozen
class Block:
    line: int
    """1-based line of the opening fence."""
    code: str
    run: bool
    expected_output: str | None


def python_blocks(text: str) -> list[Block]:
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
        assert end is not None, f"{README.name}:{i + 1}: a code block is never closed"
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


BLOCKS = python_blocks(README.read_text(encoding="utf-8")) if README.exists() else []


def test_the_readme_teaches_with_runnable_examples() -> None:
    runnable = [b for b in BLOCKS if b.run]
    assert len(runnable) >= 3, f"{README} should have runnable python examples, found {len(runnable)}"
    assert any(b.expected_output for b in runnable), "at least one example should show (and check) its output"


@pytest.mark.parametrize("block", BLOCKS, ids=[f"{README.name}:{b.line}" for b in BLOCKS])
def test_python_block(block: Block, capsys: pytest.CaptureFixture[str]) -> None:
    code = compile(
        block.code, f"{README.name}:{block.line}", "exec", dont_inherit=True
    )  # a script of its own
    if not block.run:
        return  # needs a real server: compiling it is all that can be checked here
    namespace = {"__name__": "__readme__"}
    exec(code, namespace)
    out = capsys.readouterr().out
    if block.expected_output is not None:
        assert out.rstrip("\n") == block.expected_output.rstrip("\n")


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
        ]
    )
    blocks = python_blocks(sample)
    assert [(b.line, b.code, b.run, b.expected_output) for b in blocks] == [
        (1, "print(1)", True, "1"),
        (10, "import nowhere", False, None),
        (16, "x = 2", True, None),
    ]
