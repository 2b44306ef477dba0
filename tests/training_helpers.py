"""Helpers shared by the training tests (tests/training, tests/multinode): a module, not a
conftest, so tests can import it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# A 2-epoch CPU run of the `tiny` preset that takes seconds (with a dataset and an output dir).
TINY_RUN: dict[str, Any] = {
    "epochs": 2,
    "batch_size": 2,
    "grad_accum_steps": 1,
    "num_workers": 0,
    "multi_scale": False,
    "checkpoint_interval": 1,
    "device": "cpu",
    "tensorboard": False,
    "progress_bar": False,
}


def tiny_options(dataset: Path, output_dir: Path, **overrides: Any) -> dict[str, Any]:
    """Keyword options of a :data:`TINY_RUN` on ``dataset``, writing to ``output_dir``."""
    return {"dataset_dir": str(dataset), "output_dir": str(output_dir), **TINY_RUN, **overrides}
