"""The README's and docs/'s Python code blocks run as written, so they cannot rot.

Each ```python block runs in a fresh namespace, in a temporary working directory.
Blocks of one page share nothing. A block preceded by ``<!-- no-test -->`` is skipped
(use it only for code that needs a GPU or a cloud account).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- no-test -->\s*)?```python\n(.*?)```", re.S)


def _blocks() -> list[tuple[str, int, str]]:
    found = []
    for page in PAGES:
        for number, match in enumerate(BLOCK.finditer(page.read_text())):
            if match.group(1):
                continue
            found.append((page.name, number, match.group(2)))
    return found


@pytest.mark.parametrize(("page", "number", "code"), _blocks(), ids=lambda v: str(v)[:30])
def test_code_block_runs(page: str, number: int, code: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{page}[block {number}]", "exec"), {"__name__": "__docs__"})
