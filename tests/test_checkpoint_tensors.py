"""Checkpoints that declare tensors no model can load, or a model config that is not valid.

Findings of the checkpoint fuzz (tests/fuzz/test_fuzz_checkpoints.py). Before the fix: a
``torch.zeros(1).expand(10**6, 10**6)`` saved as a weight (a file of a few hundred bytes whose
strides are 0) made the finite-weights check allocate 10**12 booleans (``RuntimeError:
DefaultCPUAllocator: can't allocate memory``, or gigabytes of real memory for smaller shapes);
sparse and meta tensors raised ``NotImplementedError``/``RuntimeError``; complex weights were
silently cast to real; an EMA ``module`` that is not a dict raised ``TypeError``; an invalid
model field raised pydantic's ``ValidationError`` from ``load_model``. Now each is a one-line
CheckpointError naming the file.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from weights_helpers import assert_one_line, tiny_detector

from rfdetr.checkpoints import CheckpointError, load_model, read_checkpoint, save_checkpoint
from rfdetr.config import get_preset
from rfdetr.models.build import build_model

WEIGHT = "transformer.decoder.layers.0.cross_attn.sampling_offsets.weight"


def _write(path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    payload: dict[str, Any] = {"model": tiny_detector().state_dict(), "config": {}, "ema": None}
    change(payload)
    torch.save(payload, path)
    return path


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda p: p["model"].update({WEIGHT: torch.zeros(1).expand(10**6, 10**6)}), "declared"),
        (
            lambda p: p["model"].update({"class_embed.bias": torch.zeros(1).expand(10**9)}),
            "declared",
        ),
        (lambda p: p["model"].update({WEIGHT: p["model"][WEIGHT].to_sparse()}), "not dense"),
        (lambda p: p["model"].update({WEIGHT: torch.empty(16, 8, device="meta")}), "'meta' device"),
        (lambda p: p["model"].update({WEIGHT: p["model"][WEIGHT].to(torch.complex64)}), "real"),
        (
            lambda p: p.update({"ema": {"module": 3, "updates": 1}}),
            "'ema' state dict is not a dict",
        ),
        (lambda p: p.update({"ema": {"module": {"x": torch.zeros(2).to_sparse()}}}), "not dense"),
    ],
    ids=["expand-1e12", "expand-head-1e9", "sparse", "meta", "complex", "ema-int", "ema-sparse"],
)
def test_a_tensor_no_model_can_load_is_one_line(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], needle: str
) -> None:
    path = _write(tmp_path / "hostile.pth", change)
    assert path.stat().st_size < 100_000  # the whole attack is a small file
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    assert_one_line(err, str(path), needle)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 512  # nothing was materialised


def test_a_shared_storage_view_is_still_a_weight(tmp_path: Path) -> None:
    """Tied or sliced weights (views that lie inside their storage) load as before."""
    state = tiny_detector().state_dict()
    state["class_embed.weight"] = torch.randn(2, 4, 8)[1]  # a view into a larger storage
    path = tmp_path / "views.pth"
    torch.save({"model": state, "config": {}}, path)
    assert torch.equal(
        read_checkpoint(path).state_dict["class_embed.weight"], state["class_embed.weight"]
    )


@pytest.mark.parametrize(
    ("field", "value"), [("resolution", "sixty-four"), ("out_feature_indexes", [1, "x"])]
)
def test_load_model_names_the_file_when_its_model_config_is_not_valid(
    tmp_path: Path, field: str, value: Any
) -> None:
    config = get_preset("tiny").with_overrides(num_classes=2)
    model = build_model(config)
    recorded = {**config.model_dump(mode="json"), field: value}
    path = save_checkpoint(
        tmp_path / "bad.pth", model.state_dict(), config=recorded, class_names=["a", "b"]
    )
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    assert_one_line(err, str(path), "the model config it records is not valid", field)
