"""Windowed ViT: windowing is invisible to windowed-free models, the position table is cached
safely, and gradient checkpointing changes memory, not results."""

from __future__ import annotations

import pytest
import torch

from rfdetr.config import get_preset
from rfdetr.models.backbone import WindowedViT
from rfdetr.models.build import build_backbone


def make_vit(
    num_windows: int, window_blocks: list[int], checkpointing: bool = False
) -> WindowedViT:
    torch.manual_seed(0)
    return WindowedViT(
        width=24,
        depth=3,
        num_heads=2,
        mlp_ratio=2,
        patch_size=4,
        pe_size=4,
        num_windows=num_windows,
        window_block_indexes=window_blocks,
        out_feature_indexes=[1, 3],
        gradient_checkpointing=checkpointing,
    )


def test_feature_maps_have_the_patch_grid_shape() -> None:
    vit = make_vit(num_windows=2, window_blocks=[0, 2])
    maps = vit(torch.randn(2, 3, 32, 16))
    assert [tuple(m.shape) for m in maps] == [(2, 24, 8, 4), (2, 24, 8, 4)]


def test_windowed_blocks_only_see_their_window() -> None:
    """With every block windowed, changing one window's pixels leaves other windows unchanged."""
    vit = make_vit(num_windows=2, window_blocks=[0, 1, 2]).eval()
    image = torch.randn(1, 3, 16, 16)
    changed = image.clone()
    changed[..., :8, :8] += 1.0  # top-left window only
    with torch.no_grad():
        before, after = vit(image)[-1], vit(changed)[-1]
    assert not torch.allclose(before[..., :2, :2], after[..., :2, :2])
    torch.testing.assert_close(before[..., 2:, :], after[..., 2:, :])
    torch.testing.assert_close(before[..., :2, 2:], after[..., :2, 2:])


def test_a_global_block_mixes_windows() -> None:
    vit = make_vit(num_windows=2, window_blocks=[0]).eval()
    image = torch.randn(1, 3, 16, 16)
    changed = image.clone()
    changed[..., :8, :8] += 1.0
    with torch.no_grad():
        before, after = vit(image)[-1], vit(changed)[-1]
    assert not torch.allclose(before[..., 2:, 2:], after[..., 2:, 2:])


def test_position_table_cache_follows_parameter_updates() -> None:
    vit = make_vit(num_windows=1, window_blocks=[]).eval()
    embeddings = vit.embeddings
    with torch.no_grad():
        first = embeddings.position_embedding(6, 6)
        assert embeddings.position_embedding(6, 6) is first  # cached while unchanged
        embeddings.position_embeddings.add_(1.0)
        second = embeddings.position_embedding(6, 6)
    assert second is not first
    torch.testing.assert_close(second, first + 1.0)


def test_position_table_gets_gradients_when_training() -> None:
    vit = make_vit(num_windows=1, window_blocks=[]).train()
    vit(torch.randn(1, 3, 24, 24))[-1].sum().backward()
    assert vit.embeddings.position_embeddings.grad is not None
    assert vit.embeddings.position_embeddings.grad.abs().sum() > 0


def test_gradient_checkpointing_gives_identical_outputs_and_gradients() -> None:
    images = torch.randn(2, 3, 16, 16)
    grads = []
    for checkpointing in (False, True):
        vit = make_vit(num_windows=2, window_blocks=[0, 2], checkpointing=checkpointing).train()
        vit(images)[-1].square().sum().backward()
        grads.append([p.grad.clone() for p in vit.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1])
    for plain, recomputed in zip(*grads, strict=True):
        torch.testing.assert_close(plain, recomputed)


def test_input_must_fit_the_window_grid() -> None:
    backbone = build_backbone(get_preset("tiny"))
    with pytest.raises(ValueError, match="divisible by patch_size \\* num_windows = 16"):
        backbone(torch.randn(1, 3, 64, 72))


def test_deploy_folds_the_scales_into_weights_and_keeps_the_outputs() -> None:
    vit = make_vit(num_windows=2, window_blocks=[0, 2]).eval()
    with torch.no_grad():  # LayerScale starts at 1: make the folding matter
        for parameter in vit.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = vit(images)
        for block in vit.encoder.layer:
            block.deploy()
        got = vit(images)
    assert not [name for name, _ in vit.named_parameters() if "layer_scale" in name]
    assert all(block.attention.scale == 1.0 for block in vit.encoder.layer)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
