"""Box conversions and overlap measures."""

from __future__ import annotations

import pytest
import torch

from rfdetr.utils import box_ops


def _random_xyxy(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    lo = torch.rand(n, 2, generator=gen)
    return torch.cat([lo, lo + 0.05 + torch.rand(n, 2, generator=gen)], dim=1)


def test_conversions_round_trip() -> None:
    xyxy = _random_xyxy(16)
    cxcywh = box_ops.box_xyxy_to_cxcywh(xyxy)
    torch.testing.assert_close(box_ops.box_cxcywh_to_xyxy(cxcywh), xyxy)
    expected = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    torch.testing.assert_close(
        box_ops.box_cxcywh_to_xyxy(expected), torch.tensor([[0.4, 0.3, 0.6, 0.7]])
    )


def test_negative_size_is_treated_as_zero() -> None:
    xyxy = box_ops.box_cxcywh_to_xyxy(torch.tensor([[0.5, 0.5, -0.2, 0.1]]))
    torch.testing.assert_close(xyxy, torch.tensor([[0.5, 0.45, 0.5, 0.55]]))


def test_iou_known_values() -> None:
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 3.0, 2.0], [5.0, 5.0, 6.0, 6.0]])
    iou, union = box_ops.box_iou(a, b)
    torch.testing.assert_close(iou, torch.tensor([[1.0, 1.0 / 3.0, 0.0]]))
    torch.testing.assert_close(union, torch.tensor([[4.0, 6.0, 5.0]]))
    assert box_ops.box_area(b).tolist() == [4.0, 4.0, 1.0]


def test_giou_known_values() -> None:
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[0.0, 0.0, 1.0, 1.0], [2.0, 0.0, 3.0, 1.0]])
    giou = box_ops.generalized_box_iou(a, b)
    # Disjoint: IoU 0, hull 3, union 2 -> 0 - (3 - 2) / 3.
    torch.testing.assert_close(giou, torch.tensor([[1.0, -1.0 / 3.0]]))


def test_pairwise_matches_torchvision() -> None:
    ops = pytest.importorskip("torchvision.ops")
    a, b = _random_xyxy(7, seed=1), _random_xyxy(5, seed=2)
    torch.testing.assert_close(box_ops.box_iou(a, b)[0], ops.box_iou(a, b))
    torch.testing.assert_close(box_ops.generalized_box_iou(a, b), ops.generalized_box_iou(a, b))


def test_elementwise_is_the_diagonal() -> None:
    a, b = _random_xyxy(9, seed=3), _random_xyxy(9, seed=4)
    torch.testing.assert_close(
        box_ops.elementwise_box_iou(a, b)[0], box_ops.box_iou(a, b)[0].diagonal()
    )
    torch.testing.assert_close(
        box_ops.elementwise_generalized_box_iou(a, b),
        box_ops.generalized_box_iou(a, b).diagonal(),
    )
    with pytest.raises(ValueError, match="equal lengths"):
        box_ops.elementwise_box_iou(a, b[:1])


def test_degenerate_boxes_stay_finite() -> None:
    point = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.2, 0.2, 0.2, 0.6]])  # zero area
    giou = box_ops.generalized_box_iou(point, point)
    assert torch.isfinite(giou).all()
    assert torch.isfinite(box_ops.elementwise_generalized_box_iou(point, point)).all()
    assert box_ops.generalized_box_iou(point, point[:0]).shape == (2, 0)
