"""Every test the Guarantees page (docs/guarantees.rst) cites exists, so a
promise never points at a test that was renamed or removed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent.parent
PAGE = ROOT / "docs" / "guarantees.rst"


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.name.startswith("test_")
    }


def test_every_cited_test_exists() -> None:
    cited = re.findall(r"``(tests/[\w/]+\.py)(?:::(\w+))?``", PAGE.read_text())
    assert len(cited) >= 15
    missing = []
    for file, name in cited:
        path = ROOT / file
        if not path.is_file() or (name and name not in _tests_in(path)):
            missing.append(f"{file}::{name}")
    assert missing == []
