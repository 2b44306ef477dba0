"""Precision: fp32 on the CPU, bf16/fp16 autocast on CUDA (GradScaler for fp16 only)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from rfdetr.config import RunConfig, TrainConfig
from rfdetr.training import fit
from rfdetr.training.runtime import resolve_precision


def test_training_cpu_trains_in_fp32_even_with_amp() -> None:
    precision = resolve_precision(TrainConfig(amp=True), torch.device("cpu"))
    assert precision.dtype is None and precision.name == "fp32" and not precision.needs_scaler


@pytest.mark.parametrize(
    ("amp_dtype", "dtype", "scaler"),
    [("bf16", torch.bfloat16, False), ("fp16", torch.float16, True)],
)
def test_training_cuda_precision_choice(amp_dtype: str, dtype: torch.dtype, scaler: bool) -> None:
    precision = resolve_precision(TrainConfig(amp_dtype=amp_dtype), torch.device("cuda"))
    assert precision.dtype == dtype and precision.needs_scaler is scaler
    off = resolve_precision(TrainConfig(amp=False, amp_dtype=amp_dtype), torch.device("cuda"))
    assert off.dtype is None


@pytest.mark.gpu
@pytest.mark.parametrize("amp_dtype", ["bf16", "fp16"])
def test_training_amp_run_on_cuda(
    shapes_coco: Path, tmp_path: Path, tiny_config: Callable[..., RunConfig], amp_dtype: str
) -> None:
    config = tiny_config(shapes_coco, tmp_path / amp_dtype, device="cuda", amp_dtype=amp_dtype)
    result = fit(config)
    state = torch.load(result.output_dir / "checkpoint.pth", weights_only=True)
    assert (state["scaler"] is not None) is (amp_dtype == "fp16")
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert result.best_checkpoint is not None and result.epochs_completed == 2
