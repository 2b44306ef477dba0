"""Precision: fp32 on the CPU unless bf16 is asked for (and native), bf16/fp16 on CUDA."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from rfdetr.config import RunConfig, TrainConfig, get_preset
from rfdetr.models.build import build_model
from rfdetr.models.criterion import count_boxes, reduce_num_boxes
from rfdetr.training import fit, runtime
from rfdetr.training.runtime import Precision, resolve_precision
from rfdetr.training.setup import build_criterion
from rfdetr.training.step import accumulate_gradients


def test_training_cpu_trains_in_fp32_even_with_amp() -> None:
    precision = resolve_precision(TrainConfig(amp=True), torch.device("cpu"))
    assert precision.dtype is None and precision.name == "fp32" and not precision.needs_scaler
    fp16 = resolve_precision(TrainConfig(amp_dtype="fp16"), torch.device("cpu"))
    assert fp16.dtype is None


@pytest.mark.parametrize("native", [True, False])
def test_training_cpu_bf16_only_where_the_cpu_computes_it_natively(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, native: bool
) -> None:
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    with caplog.at_level("WARNING", logger="rfdetr.training.runtime"):
        precision = resolve_precision(TrainConfig(amp_dtype="bf16"), torch.device("cpu"))
    assert precision.dtype == (torch.bfloat16 if native else None)
    assert not precision.needs_scaler
    assert ("no native bf16" in caplog.text) is not native
    off = resolve_precision(TrainConfig(amp=False, amp_dtype="bf16"), torch.device("cpu"))
    assert off.dtype is None


def _step_gradients(precision: Precision) -> tuple[dict[str, float], torch.Tensor]:
    config = RunConfig.from_kwargs("tiny", dataset_dir="-", num_classes=4)
    torch.manual_seed(0)
    model = build_model(config.model).train()
    criterion = build_criterion(config).train()
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 64, 64, generator=generator)
    boxes_a = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])
    targets = [
        {"labels": torch.tensor([0, 3]), "boxes": boxes_a},
        {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.3]])},
    ]
    boxes = reduce_num_boxes(count_boxes(targets) * config.model.group_detr, images.device)
    torch.manual_seed(2)
    sums = accumulate_gradients(
        model, criterion, images, targets, micro_batch=2, num_boxes=boxes, precision=precision
    )
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert all(g.dtype == torch.float32 for g in grads)  # fp32 master weights and gradients
    assert all(p.dtype == torch.float32 for p in model.parameters())
    return {k: float(v) for k, v in sums.items()}, torch.cat([g.flatten() for g in grads])


def test_training_cpu_bf16_step_stays_close_to_fp32() -> None:
    assert get_preset("tiny").group_detr > 1  # the grouped queries go through autocast too
    losses32, grads32 = _step_gradients(Precision("cpu"))
    losses16, grads16 = _step_gradients(Precision("cpu", torch.bfloat16))
    assert losses16.keys() == losses32.keys()
    for key, value in losses32.items():
        assert abs(losses16[key] - value) <= 0.05 * abs(value) + 1e-3, key
    cosine = torch.nn.functional.cosine_similarity(grads16, grads32, dim=0)
    assert cosine > 0.97
    assert not torch.equal(grads16, grads32)  # autocast really ran in bf16


def test_training_cpu_bf16_run_end_to_end(
    shapes_coco: Path,
    tmp_path: Path,
    tiny_config: Callable[..., RunConfig],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    config = tiny_config(shapes_coco, tmp_path / "bf16", amp_dtype="bf16")
    result = fit(config)
    state = torch.load(result.output_dir / "checkpoint.pth", weights_only=True)
    weights = [v for v in state["model"].values() if v.is_floating_point()]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights)
    assert state["scaler"] is None
    assert result.best_checkpoint is not None and result.epochs_completed == 2


@pytest.mark.parametrize(
    ("amp_dtype", "dtype", "scaler"),
    [("bf16", torch.bfloat16, False), ("fp16", torch.float16, True)],
)
def test_training_cuda_precision_choice(
    monkeypatch: pytest.MonkeyPatch, amp_dtype: str, dtype: torch.dtype, scaler: bool
) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
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
