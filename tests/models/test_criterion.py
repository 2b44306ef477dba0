"""SetCriterion: keys, finiteness, normalisation, learning signal."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from rfdetr.models.criterion import SetCriterion, build_weight_dict, count_boxes, weighted_loss
from rfdetr.models.matcher import HungarianMatcher

NUM_CLASSES = 3
DEC_LAYERS = 3


def _boxes(n: int, gen: torch.Generator) -> torch.Tensor:
    centre = 0.25 + 0.5 * torch.rand(n, 2, generator=gen)
    return torch.cat([centre, 0.1 + 0.3 * torch.rand(n, 2, generator=gen)], 1)


def _layer(batch: int, queries: int, gen: torch.Generator, masks: bool) -> dict[str, Any]:
    layer = {
        "pred_logits": torch.randn(batch, queries, NUM_CLASSES + 1, generator=gen),
        "pred_boxes": _boxes(batch * queries, gen).view(batch, queries, 4),
    }
    if masks:
        layer["pred_masks"] = torch.randn(batch, queries, 8, 8, generator=gen)
    return layer


def _outputs(batch: int, queries: int, masks: bool = False, seed: int = 0) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    outputs = _layer(batch, queries, gen, masks)
    outputs["aux_outputs"] = [_layer(batch, queries, gen, masks) for _ in range(DEC_LAYERS - 1)]
    outputs["enc_outputs"] = _layer(batch, queries, gen, masks)
    return outputs


def _box_masks(boxes: torch.Tensor, size: int = 32) -> torch.Tensor:
    grid = (torch.arange(size) + 0.5) / size
    lo, hi = boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2
    inside_x = (grid >= lo[:, :1]) & (grid <= hi[:, :1])
    inside_y = (grid >= lo[:, 1:]) & (grid <= hi[:, 1:])
    return inside_y[:, :, None] & inside_x[:, None, :]


def _targets(
    counts: list[int], masks: bool = False, seed: int = 1
) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    targets = []
    for n in counts:
        target = {
            "labels": torch.randint(0, NUM_CLASSES, (n,), generator=gen),
            "boxes": _boxes(n, gen),
        }
        if masks:
            target["masks"] = _box_masks(target["boxes"])
        targets.append(target)
    return targets


def _criterion(groups: int = 2, masks: bool = False, **kwargs: Any) -> SetCriterion:
    return SetCriterion(
        NUM_CLASSES,
        HungarianMatcher(),
        build_weight_dict(DEC_LAYERS, segmentation=masks),
        losses=["labels", "boxes", *(["masks"] if masks else [])],
        group_detr=groups,
        **kwargs,
    )


@pytest.mark.parametrize("masks", [False, True])
@pytest.mark.parametrize("counts", [[2, 0, 3], [0, 0, 0]])
def test_keys_and_finite_losses(masks: bool, counts: list[int]) -> None:
    outputs = _outputs(3, 8, masks=masks)
    logits = outputs["pred_logits"].requires_grad_()
    criterion = _criterion(masks=masks)
    losses = criterion(outputs, _targets(counts, masks=masks))
    assert set(losses) == set(criterion.weight_dict) | {"class_error"}
    assert {"loss_ce_0", "loss_bbox_1", "loss_giou_enc"} <= set(losses)
    assert all(torch.isfinite(value) for value in losses.values())
    criterion.total_loss(losses).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_weight_dict_layout() -> None:
    det = build_weight_dict(4)
    assert det["loss_ce"] == 1.0 and det["loss_bbox_2"] == 5.0 and det["loss_giou_enc"] == 2.0
    assert "loss_ce_3" not in det and "loss_mask_ce" not in det
    seg = build_weight_dict(2, segmentation=True)
    # upstream 1.11.2 SegmentationTrainConfig.cls_loss_coef = 1.0 (rfdetr/config.py, the v1.7
    # 5.0 called a regression there); the mask weights stay 5.0
    assert seg["loss_ce"] == 1.0 and seg["loss_ce_0"] == 1.0
    assert seg["loss_mask_dice_0"] == 5.0 and seg["loss_mask_ce_enc"] == 5.0
    assert build_weight_dict(2, segmentation=True, cls_loss_coef=5.0)["loss_ce"] == 5.0
    assert set(build_weight_dict(3, aux_loss=False)) == {"loss_ce", "loss_bbox", "loss_giou"}
    assert "loss_ce_enc" not in build_weight_dict(3, two_stage=False)


def test_total_loss_is_the_weighted_sum() -> None:
    losses = {
        "loss_ce": torch.tensor(2.0),
        "loss_bbox": torch.tensor(3.0),
        "class_error": torch.tensor(50.0),
    }
    total = weighted_loss(losses, {"loss_ce": 0.5, "loss_bbox": 2.0, "loss_giou": 9.0})
    assert total.item() == pytest.approx(7.0)


def test_default_normaliser_counts_boxes_times_groups() -> None:
    outputs, targets = _outputs(2, 12), _targets([3, 2])
    criterion = _criterion(groups=3)
    assert count_boxes(targets) == 5
    implicit = criterion(outputs, targets)
    explicit = criterion(outputs, targets, num_boxes=15.0)
    for key in criterion.weight_dict:
        torch.testing.assert_close(implicit[key], explicit[key])
    empty = criterion.num_boxes_for_targets(_targets([0, 0]), torch.device("cpu"))
    assert empty.item() == 1.0  # clamped so empty batches do not divide by zero
    criterion.eval()  # evaluation uses a single group
    assert criterion.num_boxes_for_targets(targets, torch.device("cpu")).item() == 5.0


def test_half_batches_with_step_normaliser_sum_to_full_batch() -> None:
    """Gradient accumulation: two micro-batches normalised by the step's box count."""
    outputs, targets = _outputs(4, 6), _targets([2, 0, 3, 1])
    criterion = _criterion(groups=2)
    full = criterion(outputs, targets)  # normaliser 6 boxes x 2 groups
    step_boxes = float(count_boxes(targets) * criterion.group_detr)

    def half(part: slice) -> dict[str, torch.Tensor]:
        sliced = _slice_outputs(outputs, part)
        return criterion(sliced, targets[part], num_boxes=step_boxes)

    first, second = half(slice(0, 2)), half(slice(2, 4))
    for key in criterion.weight_dict:
        torch.testing.assert_close(first[key] + second[key], full[key])


def _slice_outputs(outputs: dict[str, Any], part: slice) -> dict[str, Any]:
    def cut(layer: dict[str, Any]) -> dict[str, Any]:
        return {k: v[part] for k, v in layer.items() if isinstance(v, torch.Tensor)}

    sliced = cut(outputs)
    sliced["aux_outputs"] = [cut(layer) for layer in outputs["aux_outputs"]]
    sliced["enc_outputs"] = cut(outputs["enc_outputs"])
    return sliced


def test_focal_variant_and_cardinality_metric() -> None:
    criterion = SetCriterion(
        NUM_CLASSES,
        HungarianMatcher(),
        build_weight_dict(DEC_LAYERS),
        losses=["labels", "boxes", "cardinality"],
        ia_bce_loss=False,
    )
    losses = criterion(_outputs(2, 5), _targets([1, 2]))
    assert torch.isfinite(losses["loss_ce"]) and "cardinality_error_enc" in losses


def test_unknown_loss_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown losses"):
        SetCriterion(NUM_CLASSES, HungarianMatcher(), {}, losses=["labels", "keypoints"])


def test_toy_overfit_detection() -> None:
    """A free set of predictions, optimised with Adam, learns the targets."""
    torch.manual_seed(0)
    targets = _targets([3, 2], seed=4)
    logits = torch.zeros(2, 12, NUM_CLASSES + 1, requires_grad=True)
    box_params = torch.zeros(2, 12, 4, requires_grad=True)
    criterion = _criterion(groups=2)
    optimiser = torch.optim.Adam([logits, box_params], lr=0.1)
    history = []
    for _ in range(100):
        layer = {"pred_logits": logits, "pred_boxes": box_params.sigmoid()}
        loss = criterion.total_loss(criterion(layer, targets))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(loss.item())
    assert history[-1] < 0.25 * history[0]
    final = criterion({"pred_logits": logits, "pred_boxes": box_params.sigmoid()}, targets)
    assert final["loss_giou"].item() < 0.1 and final["class_error"].item() == 0.0


def test_mask_losses_decrease() -> None:
    torch.manual_seed(0)
    targets = _targets([2, 1], masks=True, seed=5)
    gen = torch.Generator().manual_seed(6)
    layer = {k: v.detach() for k, v in _layer(2, 4, gen, masks=False).items()}
    mask_logits = torch.zeros(2, 4, 8, 8, requires_grad=True)
    criterion = _criterion(groups=1, masks=True)
    optimiser = torch.optim.Adam([mask_logits], lr=0.2)
    history = []
    for _ in range(60):
        losses = criterion(dict(layer, pred_masks=mask_logits), targets)
        loss = losses["loss_mask_ce"] + losses["loss_mask_dice"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(loss.item())
    assert all(torch.isfinite(torch.tensor(history)))
    assert history[-1] < 0.5 * history[0]


def test_factored_masks_give_the_dense_loss() -> None:
    gen = torch.Generator().manual_seed(8)
    layer = _layer(2, 6, gen, masks=False)
    spatial, queries = torch.randn(2, 5, 8, 8, generator=gen), torch.randn(2, 6, 5, generator=gen)
    bias = torch.tensor(-0.2)
    dense = torch.einsum("bchw,bqc->bqhw", spatial, queries) + bias
    factored = {"spatial_features": spatial, "query_features": queries, "bias": bias}
    targets = _targets([2, 3], masks=True, seed=9)
    criterion = _criterion(groups=2, masks=True)
    torch.manual_seed(0)
    from_dense = criterion(dict(layer, pred_masks=dense), targets)
    torch.manual_seed(0)
    from_factored = criterion(dict(layer, pred_masks=factored), targets)
    for key in ("loss_mask_ce", "loss_mask_dice", "loss_ce"):
        torch.testing.assert_close(from_dense[key], from_factored[key], rtol=1e-4, atol=1e-5)


def test_mask_loss_without_matches_keeps_the_graph() -> None:
    spatial = torch.randn(1, 4, 8, 8, requires_grad=True)
    factored = {
        "spatial_features": spatial,
        "query_features": torch.randn(1, 4, 4),
        "bias": torch.tensor(0.0),
    }
    layer = {
        "pred_logits": torch.randn(1, 4, NUM_CLASSES + 1),
        "pred_boxes": torch.rand(1, 4, 4),
        "pred_masks": factored,
    }
    losses = _criterion(groups=1, masks=True)(layer, _targets([0], masks=True))
    assert losses["loss_mask_ce"].item() == 0.0
    losses["loss_mask_ce"].backward()
    assert spatial.grad is not None  # DDP needs every parameter in the graph
