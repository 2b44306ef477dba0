"""Issue #16's size limits on the shipped code: no module over 400 lines, no function over 60.

Counted as `wc -l` counts (every line, docstrings and blank lines included) over ``rfdetr/``,
``pipelines/`` and ``components/``; a function's length runs from its ``def`` (decorators
excluded) to its last line, as ``ast`` reports them.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rfdetr", "pipelines", "components")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    found = sorted(path for name in PACKAGES for path in (ROOT / name).rglob("*.py"))
    assert len(found) > 100, f"expected the project's modules under {PACKAGES}, found {found}"
    return found


def test_no_module_is_over_the_line_limit() -> None:
    too_long = {
        str(path.relative_to(ROOT)): count
        for path in _modules()
        if (count := len(path.read_text().splitlines())) > MAX_FILE_LINES
    }
    assert too_long == {}


def test_no_function_is_over_the_line_limit() -> None:
    too_long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long[f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"] = length
    assert too_long == {}
