"""What keeps the code base easy to change: short functions in the packages a newcomer edits.

The packages a plugin author or a newcomer changes: flows/ and providers/. The CLI's commands are
typer signatures of twenty options each, and benchmarks read as one scenario each: not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 60
PACKAGES = ("flows", "providers")


def _long_functions(source: str) -> list[tuple[str, int]]:
    tree = ast.parse(source)
    return [
        (node.name, (node.end_lineno or node.lineno) - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (node.end_lineno or node.lineno) - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


def test_no_function_is_longer_than_a_screen() -> None:
    found = [
        f"{path.relative_to(ROOT)}::{name} ({lines} lines)"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for name, lines in _long_functions(path.read_text(encoding="utf-8"))
    ]
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines: {found}"


def test_the_check_sees_a_long_function() -> None:
    body = "\n".join(f"    x{n} = {n}" for n in range(MAX_FUNCTION_LINES))
    assert _long_functions(f"def f():\n{body}\n") == [("f", MAX_FUNCTION_LINES + 1)]
    assert _long_functions("def g():\n    return 1\n") == []
