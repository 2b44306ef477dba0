"""Constants shared by the pipeline tests (a module with a unique name, not a conftest, so test
files can import it)."""

from __future__ import annotations

from typing import Any

# Fast CPU settings of the tiny preset, as pipeline parameters.
TINY_PARAMS: dict[str, Any] = {
    "model_size": "tiny",
    "epochs": 1,
    "batch_size": 4,
    "grad_accum_steps": 1,
    "overrides": {"num_workers": 0, "multi_scale": False, "device": "cpu"},
}
