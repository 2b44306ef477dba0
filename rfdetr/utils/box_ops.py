"""Box conversions and overlap measures used by the matcher, the criterion and post-processing.

Two box formats appear in this library:

- ``cxcywh``: ``(centre x, centre y, width, height)``, normalised to ``[0, 1]`` by the image size.
  The model predicts boxes in this format and targets carry them in it.
- ``xyxy``: ``(x0, y0, x1, y1)``, either normalised or in pixels; IoU and GIoU are computed on it.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Guards the two divisions below against 0/0 on degenerate (zero-area) boxes. It is applied as a
# clamp, not an addition, so two identical non-degenerate boxes still give an IoU of exactly 1.
_EPS = 1e-7


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``[..., 4]`` ``cxcywh`` -> ``[..., 4]`` ``xyxy`` in the same units. Negative widths or
    heights (possible in raw predictions) count as zero, so the result is never inverted."""
    cx, cy, w, h = boxes.unbind(-1)
    half_w = 0.5 * w.clamp(min=0.0)
    half_h = 0.5 * h.clamp(min=0.0)
    return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``[..., 4]`` ``xyxy`` -> ``[..., 4]`` ``cxcywh`` in the same units."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """``[...]`` areas of ``[..., 4]`` ``xyxy`` boxes."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _iou(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """``(iou, union)`` of broadcastable ``[..., 4]`` ``xyxy`` boxes."""
    lt = torch.max(boxes1[..., :2], boxes2[..., :2])
    rb = torch.min(boxes1[..., 2:], boxes2[..., 2:])
    inter_wh = (rb - lt).clamp(min=0)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = box_area(boxes1) + box_area(boxes2) - inter
    return inter / union.clamp(min=_EPS), union


def _giou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    iou, union = _iou(boxes1, boxes2)
    lt = torch.min(boxes1[..., :2], boxes2[..., :2])
    rb = torch.max(boxes1[..., 2:], boxes2[..., 2:])
    hull_wh = (rb - lt).clamp(min=0)
    hull = hull_wh[..., 0] * hull_wh[..., 1]
    return iou - (hull - union) / hull.clamp(min=_EPS)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise IoU of ``[N, 4]`` and ``[M, 4]`` ``xyxy`` boxes (same units): ``(iou, union)``,
    both ``[N, M]``."""
    return _iou(boxes1[:, None], boxes2[None])


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise generalised IoU (Rezatofighi et al., 2019) of ``[N, 4]`` and ``[M, 4]`` ``xyxy``
    boxes (same units): ``[N, M]`` in ``[-1, 1]``, finite for degenerate boxes too."""
    return _giou(boxes1[:, None], boxes2[None])


def elementwise_box_iou(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """IoU of the pairs ``(boxes1[i], boxes2[i])``, both ``[N, 4]`` ``xyxy``: the diagonal of
    :func:`box_iou`, ``(iou, union)`` both ``[N]``. Raises ValueError on unequal lengths."""
    return _iou(*_same_length(boxes1, boxes2))


def elementwise_generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """GIoU ``[N]`` of the pairs ``(boxes1[i], boxes2[i])``, both ``[N, 4]`` ``xyxy``: the
    diagonal of :func:`generalized_box_iou`."""
    return _giou(*_same_length(boxes1, boxes2))


def _same_length(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    # A length-1 operand would silently broadcast and hide a matching bug.
    if boxes1.shape[0] != boxes2.shape[0]:
        raise ValueError(
            f"elementwise box ops need equal lengths, got {boxes1.shape[0]} and {boxes2.shape[0]}"
        )
    return boxes1, boxes2
