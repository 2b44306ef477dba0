"""Checkpoints have one home: one module unpickles files, one writes them."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def torch_calls(root: Path, name: str) -> set[str]:
    """Files (relative to ``root``) under rfdetr/, pipelines/ and components/ calling
    ``torch.<name>(...)``."""
    found = set()
    for folder in ("rfdetr", "pipelines", "components"):
        for file in sorted((root / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(file.read_text(), str(file))):
                call = node.func if isinstance(node, ast.Call) else None
                if (
                    isinstance(call, ast.Attribute)
                    and call.attr == name
                    and isinstance(call.value, ast.Name)
                    and call.value.id == "torch"
                ):
                    found.add(file.relative_to(root).as_posix())
    return found


def test_one_reader_and_one_writer_of_checkpoint_files() -> None:
    # safe_load: torch.load(weights_only=True) with the upstream allow-list, for every format.
    assert torch_calls(ROOT, "load") == {"rfdetr/checkpoints/formats.py"}
    # atomic_save: the only writer, behind save_checkpoint / save_training_checkpoint.
    assert torch_calls(ROOT, "save") == {"rfdetr/checkpoints/files.py"}
