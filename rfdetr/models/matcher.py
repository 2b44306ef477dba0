"""Hungarian matching between predicted queries and ground-truth objects (DETR-style).

Per image a ``[Q, T]`` cost matrix is solved with :func:`scipy.optimize.linear_sum_assignment`;
with Group DETR each of the ``group_detr`` query groups is matched on its own, so every target
gets one query per group. Cost terms and weights: :class:`HungarianMatcher`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from rfdetr.models.point_sampling import (
    MaskPrediction,
    mask_logits_at_points,
    point_sample,
)
from rfdetr.utils.box_ops import box_cxcywh_to_xyxy, generalized_box_iou

logger = logging.getLogger(__name__)

MatchIndices = list[tuple[Tensor, Tensor]]
FOCAL_GAMMA = 2.0  # focal exponent of the matching cost and the losses (fixed, as upstream)


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to targets, per image and per query group, by the cost
    ``cost_class`` x focal classification cost (alpha ``focal_alpha``) + ``cost_bbox`` x L1
    distance of normalised cxcywh boxes - ``cost_giou`` x generalised IoU and, when masks are
    present, + ``cost_mask_ce`` x sigmoid BCE + ``cost_mask_dice`` x Dice at
    ``h * w // mask_point_sample_ratio`` random points of the batch's ``h x w`` mask canvas.
    """

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        focal_alpha: float = 0.25,
        *,
        cost_mask_ce: float = 5.0,
        cost_mask_dice: float = 5.0,
        mask_point_sample_ratio: int = 16,
    ) -> None:
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("HungarianMatcher: cost_class, cost_bbox and cost_giou are all 0")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.focal_alpha = focal_alpha
        self.cost_mask_ce = cost_mask_ce
        self.cost_mask_dice = cost_mask_dice
        self.mask_point_sample_ratio = mask_point_sample_ratio
        self._warned_non_finite = False

    @torch.no_grad()
    def forward(
        self, outputs: dict[str, Any], targets: list[dict[str, Tensor]], group_detr: int = 1
    ) -> MatchIndices:
        """Match queries to targets.

        Args:
            outputs: ``pred_logits`` ``[B, Q, K]`` raw logits (sigmoid per class), ``pred_boxes``
                ``[B, Q, 4]`` normalised cxcywh and, for segmentation, ``pred_masks`` (dense
                ``[B, Q, h, w]`` logits or the factored dict, see :mod:`point_sampling`).
            targets: one dict per image: ``labels`` int64 ``[T]`` in ``[0, K)``, ``boxes``
                ``[T, 4]`` normalised cxcywh and, for segmentation, ``masks`` ``[T, H, W]``
                (bool or float) on the same canvas as the predicted masks.
            group_detr: number of query groups; must divide Q.

        Returns:
            One ``(query_idx, target_idx)`` pair of int64 CPU tensors per image. Query indices
            are global (``0 <= i < Q``); the groups' matches are concatenated in group order,
            each group contributing ``min(Q / group_detr, T)`` pairs.
        """
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        num_queries = logits.shape[1]
        if num_queries % group_detr != 0:
            raise ValueError(
                f"num_queries ({num_queries}) is not divisible by group_detr ({group_detr})"
            )
        use_masks = "pred_masks" in outputs and bool(targets) and "masks" in targets[0]
        mask_costs = self._mask_costs(outputs["pred_masks"], targets) if use_masks else None

        blocks = []
        for b, target in enumerate(targets):
            cost = self._detection_cost(logits[b], boxes[b], target["labels"], target["boxes"])
            if mask_costs is not None:
                cost = cost + self.cost_mask_ce * mask_costs[b][0]
                cost = cost + self.cost_mask_dice * mask_costs[b][1]
            blocks.append(cost)
        # One device-to-host copy for the whole batch; scipy needs host memory anyway.
        cost_matrix = self._sanitize(torch.cat(blocks, dim=1).float().cpu())
        sizes = [len(target["boxes"]) for target in targets]
        return _solve(cost_matrix.numpy(), sizes, group_detr)

    def _detection_cost(
        self, logits: Tensor, boxes: Tensor, labels: Tensor, target_boxes: Tensor
    ) -> Tensor:
        logits = logits.float()[:, labels]  # only the target classes' columns are ever used
        prob = logits.sigmoid()
        # Focal loss of "class c" minus that of "not c"; logsigmoid keeps both finite.
        pos = self.focal_alpha * (1 - prob) ** FOCAL_GAMMA * -F.logsigmoid(logits)
        neg = (1 - self.focal_alpha) * prob**FOCAL_GAMMA * -F.logsigmoid(-logits)
        class_cost = pos - neg
        boxes, target_boxes = boxes.float(), target_boxes.to(boxes.device).float()
        l1_cost = (boxes[:, None, :] - target_boxes[None, :, :]).abs().sum(-1)
        giou = generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(target_boxes))
        return self.cost_bbox * l1_cost + self.cost_class * class_cost - self.cost_giou * giou

    def _mask_costs(
        self, pred_masks: MaskPrediction, targets: list[dict[str, Tensor]]
    ) -> list[tuple[Tensor, Tensor]]:
        source = pred_masks if isinstance(pred_masks, Tensor) else pred_masks["spatial_features"]
        height, width = source.shape[-2:]
        num_points = max(1, height * width // self.mask_point_sample_ratio)
        device = source.device
        points = torch.rand(1, num_points, 2, device=device)
        pred_points = mask_logits_at_points(pred_masks, points).float()  # [B, Q, P]
        costs = []
        for b, target in enumerate(targets):
            masks = target["masks"].to(device=device, dtype=torch.float32)
            tgt_points = point_sample(
                masks.unsqueeze(1), points.expand(masks.shape[0], -1, -1), mode="nearest"
            ).squeeze(1)  # [T, P]
            costs.append(_pairwise_mask_costs(pred_points[b], tgt_points))
        return costs

    def _sanitize(self, cost: Tensor) -> Tensor:
        """Replace NaN/inf costs by a finite value above every finite cost, so they lose."""
        finite = torch.isfinite(cost)
        if bool(finite.all()):
            return cost
        if not self._warned_non_finite:
            logger.warning(
                "matcher: non-finite matching costs replaced; check for unstable outputs"
            )
            self._warned_non_finite = True
        top = torch.finfo(cost.dtype).max
        valid = cost[finite]
        # max + max|c| + 1 stays above every finite entry even when they are all negative.
        above = float(valid.max() + valid.abs().max() + 1.0) if valid.numel() else top
        return torch.where(finite, cost, torch.full_like(cost, min(above, top)))


def _pairwise_mask_costs(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """``(bce, dice)`` ``[Q, T]`` of ``[Q, P]`` logits against ``[T, P]`` binary values."""
    num_points = pred.shape[1]
    # BCE(x, y) = y * softplus(-x) + (1 - y) * softplus(x); both terms are matrix products.
    bce = (F.softplus(-pred) @ target.T + F.softplus(pred) @ (1 - target).T) / num_points
    prob = pred.sigmoid()
    overlap = 2 * prob @ target.T
    total = prob.sum(-1)[:, None] + target.sum(-1)[None, :]
    dice = 1 - (overlap + 1) / (total + 1)
    return bce, dice


def _solve(cost: np.ndarray, sizes: list[int], group_detr: int) -> MatchIndices:
    group_size = cost.shape[0] // group_detr
    matches = []
    for image in np.split(cost, np.cumsum(sizes)[:-1], axis=1):  # [Q, T_b] each
        groups = [linear_sum_assignment(group) for group in np.split(image, group_detr)]
        rows = np.concatenate([r + g * group_size for g, (r, _) in enumerate(groups)])
        cols = np.concatenate([c for _, c in groups])
        matches.append(
            (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
        )
    return matches
