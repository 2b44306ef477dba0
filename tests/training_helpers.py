"""Helpers shared by the training tests (a module, not a conftest, so tests can import it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def tiny_options(dataset: Path, output_dir: Path, **overrides: Any) -> dict[str, Any]:
    """Keyword options of a 2-epoch CPU run of the `tiny` preset that takes seconds."""
    return {
        "dataset_dir": str(dataset),
        "output_dir": str(output_dir),
        "epochs": 2,
        "batch_size": 2,
        "grad_accum_steps": 1,
        "num_workers": 0,
        "multi_scale": False,
        "checkpoint_interval": 1,
        "device": "cpu",
        "tensorboard": False,
        "progress_bar": False,
        **overrides,
    }
