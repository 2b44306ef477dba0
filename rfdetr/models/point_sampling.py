"""Point sampling for the mask cost and mask loss (PointRend-style, Kirillov et al., 2020).

Mask losses use a few sampled points, not full masks (memory stays flat with thousands of Group
DETR queries). Points are normalised ``(x, y)`` in ``[0, 1]`` over the canvas (every function
here), so 1/4-resolution predictions and full-resolution targets are sampled alike, unresized.

`MaskPrediction` is dense ``[B, Q, h, w]`` logits or, as upstream's training forward returns them,
factored: ``spatial_features`` ``[B, C, h, w]``, ``query_features`` ``[B, Q, C]`` and ``bias``
(``[]`` or ``[1]``), logits ``einsum("bchw,bqc->bqhw") + bias`` never built as ``Q x h x w``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

MaskPrediction = Tensor | dict[str, Tensor]
OVERSAMPLE_RATIO, IMPORTANCE_SAMPLE_RATIO = 3, 0.75


def point_sample(features: Tensor, points: Tensor, mode: str = "bilinear") -> Tensor:
    """``[N, C, H, W]`` feature maps sampled at ``[N, P, 2]`` points -> ``[N, C, P]``, with
    ``grid_sample``: ``mode`` ``"bilinear"`` for logits, ``"nearest"`` for binary target masks;
    ``"border"`` padding (as upstream) clamps the outer half-pixel to the edge value."""
    grid = (2.0 * points - 1.0).unsqueeze(2)  # [N, P, 1, 2] in grid_sample's [-1, 1] convention
    out = F.grid_sample(features, grid, mode=mode, padding_mode="border", align_corners=False)
    return out.squeeze(3)


def sample_uncertain_points(mask_logits: Tensor, num_points: int) -> Tensor:
    """``[N, P, 2]`` points where the ``[N, 1, h, w]`` mask logits are most uncertain, plus
    uniform random points: of ``3 P`` uniform candidates per mask, the ``0.75 P`` with the highest
    uncertainty ``-|logit|`` (of the sampled logit) are kept; fresh uniform points fill the rest
    (the ratios of upstream 1.11.2, `rfdetr/models/heads/segmentation.py`)."""
    n, device = mask_logits.shape[0], mask_logits.device
    candidates = torch.rand(n, num_points * OVERSAMPLE_RATIO, 2, device=device)
    scores = -point_sample(mask_logits, candidates)[:, 0, :].abs()  # [N, candidates]
    num_uncertain = int(IMPORTANCE_SAMPLE_RATIO * num_points)
    top = scores.topk(num_uncertain, dim=1).indices
    chosen = torch.gather(candidates, 1, top[..., None].expand(-1, -1, 2))
    num_random = num_points - num_uncertain
    if num_random > 0:
        chosen = torch.cat([chosen, torch.rand(n, num_random, 2, device=device)], dim=1)
    return chosen


def mask_logits_at_points(pred_masks: MaskPrediction, points: Tensor) -> Tensor:
    """``[B, Q, P]`` logits of every query's mask (`MaskPrediction`) at ``[P, 2]`` points shared
    by the whole batch."""
    if isinstance(pred_masks, Tensor):
        b, q = pred_masks.shape[:2]
        flat = pred_masks.flatten(0, 1).unsqueeze(1)  # [B*Q, 1, h, w]
        sampled = point_sample(flat, points.expand(b * q, -1, -1))
        return sampled.view(b, q, -1)
    spatial = pred_masks["spatial_features"]
    # Logits are linear in the features: sample first, never build [B, Q, h, w].
    sampled = point_sample(spatial, points.expand(spatial.shape[0], -1, -1))  # [B, C, P]
    return torch.einsum("bcp,bqc->bqp", sampled, pred_masks["query_features"]) + pred_masks["bias"]


def gather_matched_masks(
    pred_masks: MaskPrediction, batch_idx: Tensor, query_idx: Tensor
) -> Tensor:
    """``[N, h, w]`` full-resolution logits (`MaskPrediction`) of the matched queries' masks,
    in match order; ``batch_idx`` ``[N]`` (grouped by image, ascending) and ``query_idx`` ``[N]``
    name each match's image and query."""
    if isinstance(pred_masks, Tensor):
        return pred_masks[batch_idx, query_idx]
    spatial = pred_masks["spatial_features"]
    queries = pred_masks["query_features"]
    bias = pred_masks["bias"]
    if batch_idx.numel() == 0:
        # Keep every head output in the graph: DDP fails on parameters that get no gradient.
        zero = (spatial.sum() + queries.sum() + bias.sum()) * 0.0
        return zero.expand(0, *spatial.shape[-2:])
    # One image at a time, so only that image's matched masks exist at once.
    chunks = []
    for b in torch.unique_consecutive(batch_idx).tolist():
        selected = queries[b, query_idx[batch_idx == b]]  # [n_b, C]
        chunks.append(torch.einsum("chw,nc->nhw", spatial[b], selected) + bias)
    return torch.cat(chunks)
