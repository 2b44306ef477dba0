"""Every preset builds, runs forward in training and eval mode, and back-propagates."""

from __future__ import annotations

import pytest
import torch

from rfdetr.config import get_preset, list_presets, toy_version
from rfdetr.models.build import build_model

FULL_SIZE_PRESETS = [name for name in list_presets() if not name.startswith("tiny")]


def toy_model(size: str) -> tuple[torch.nn.Module, int]:
    cfg = toy_version(get_preset(size))
    return build_model(cfg), cfg.resolution


@pytest.mark.parametrize("size", FULL_SIZE_PRESETS)
def test_toy_version_of_every_preset_runs_eval(size: str) -> None:
    model, res = toy_model(size)
    cfg = toy_version(get_preset(size))
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, res, res))
    assert out["pred_logits"].shape == (2, cfg.num_queries, cfg.num_classes + 1)
    assert out["pred_boxes"].shape == (2, cfg.num_queries, 4)
    assert torch.isfinite(out["pred_logits"]).all() and torch.isfinite(out["pred_boxes"]).all()
    assert (out["pred_boxes"][..., 2:] > 0).all()
    if cfg.segmentation_head:
        assert out["pred_masks"].shape == (2, cfg.num_queries, res // 4, res // 4)
        assert torch.isfinite(out["pred_masks"]).all()
    assert "aux_outputs" not in out


@pytest.mark.parametrize("size", ["nano", "base", "seg-nano", "seg-small"])
def test_toy_training_forward_has_all_groups_aux_and_encoder_outputs(size: str) -> None:
    model, res = toy_model(size)
    cfg = toy_version(get_preset(size))
    model.train()
    out = model(torch.randn(2, 3, res, res))
    total = cfg.num_queries * cfg.group_detr
    assert out["pred_logits"].shape == (2, total, cfg.num_classes + 1)
    assert len(out["aux_outputs"]) == cfg.dec_layers - 1
    assert out["enc_outputs"]["pred_boxes"].shape == (2, total, 4)
    loss = out["pred_logits"].sigmoid().mean() + out["pred_boxes"].mean()
    loss = loss + out["enc_outputs"]["pred_logits"].mean()
    if cfg.segmentation_head:
        masks = out["pred_masks"]
        assert masks["query_features"].shape == (2, total, cfg.hidden_dim)
        assert masks["spatial_features"].shape[-2:] == (res // 4, res // 4)
        loss = loss + masks["query_features"].mean() + masks["spatial_features"].mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert sum(g is not None for g in grads) > 0.9 * len(grads)


def test_query_groups_do_not_see_each_other_in_training() -> None:
    """Changing the learned queries of group 1 must not change group 0's decoder output."""
    model, res = toy_model("nano")
    model.train()
    images = torch.randn(1, 3, res, res)
    q = model.num_queries
    torch.manual_seed(1)
    first = model(images)["pred_logits"][:, :q].detach()
    with torch.no_grad():
        model.query_feat.weight[q:] += 1.0
    second = model(images)["pred_logits"][:, :q].detach()
    torch.testing.assert_close(first, second)


def test_eval_uses_group_zero_of_training() -> None:
    model, res = toy_model("nano")
    images = torch.randn(1, 3, res, res)
    model.train()
    train_out = model(images)["pred_logits"][:, : model.num_queries]
    model.eval()
    eval_out = model(images)["pred_logits"]
    torch.testing.assert_close(train_out, eval_out, atol=1e-5, rtol=1e-5)


def test_other_input_sizes_interpolate_the_position_embedding() -> None:
    model, res = toy_model("nano")
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 2 * res, 2 * res))
    assert torch.isfinite(out["pred_boxes"]).all()
    with pytest.raises(ValueError, match="divisible by patch_size \\* num_windows"):
        model(torch.randn(1, 3, res + 8, res))


@pytest.mark.slow
@pytest.mark.parametrize("size", ["nano", "seg-nano"])
def test_full_size_forward_at_default_resolution(size: str) -> None:
    cfg = get_preset(size)
    model = build_model(cfg).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, cfg.resolution, cfg.resolution))
    assert out["pred_logits"].shape == (1, cfg.num_queries, 91)
    assert out["pred_boxes"].shape == (1, cfg.num_queries, 4)
    assert torch.isfinite(out["pred_logits"]).all()
    if cfg.segmentation_head:
        side = cfg.resolution // 4
        assert out["pred_masks"].shape == (1, cfg.num_queries, side, side)
