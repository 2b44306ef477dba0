"""Training losses of RF-DETR: Hungarian-matched set losses with Group DETR and deep supervision.

Per output layer (final decoder layer, earlier decoder layers ``_0``, ``_1``, ..., encoder
proposals ``_enc``, keys named as upstream so :func:`build_weight_dict` applies) the matches get
``loss_ce`` (IoU-aware BCE or sigmoid focal), ``loss_bbox`` (L1, normalised cxcywh),
``loss_giou`` (1 - GIoU) and ``loss_mask_ce`` / ``loss_mask_dice`` at PointRend-sampled points.
Every loss is a sum divided by one normaliser, ``num_boxes``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from rfdetr.models.matcher import FOCAL_GAMMA, HungarianMatcher, MatchIndices
from rfdetr.models.point_sampling import gather_matched_masks, point_sample, sample_uncertain_points
from rfdetr.utils.box_ops import (
    box_cxcywh_to_xyxy,
    elementwise_box_iou,
    elementwise_generalized_box_iou,
)

_LOSS_NAMES = ("labels", "boxes", "cardinality", "masks")


class SetCriterion(nn.Module):
    """Matched set losses for every output layer of the detector.

    Args:
        num_classes: number of object classes C; ``pred_logits`` has C or C + 1 columns (the
            head's extra "no-object" column gets only negative supervision, as upstream).
        weight_dict: loss key -> weight, used by :meth:`total_loss`.
        focal_alpha: alpha of the focal loss, and the exponent mixing score and IoU in the
            IoU-aware BCE target ``t = p^alpha * IoU^(1 - alpha)``.
        losses: any of ``"labels"``, ``"boxes"``, ``"masks"`` and ``"cardinality"`` (logging only).
        group_detr: number of query groups in training; evaluation (``.eval()``) uses one.
        ia_bce_loss: IoU-aware BCE classification loss; False selects the sigmoid focal loss.
        mask_point_sample_ratio: the mask loss uses ``max(h, h * w // ratio)`` points per mask,
            chosen by `sample_uncertain_points` (upstream's ratios).
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        weight_dict: Mapping[str, float],
        focal_alpha: float = 0.25,
        losses: Sequence[str] = ("labels", "boxes"),
        group_detr: int = 1,
        *,
        ia_bce_loss: bool = True,
        mask_point_sample_ratio: int = 16,
    ) -> None:
        super().__init__()
        unknown = sorted(set(losses) - set(_LOSS_NAMES))
        if unknown:
            raise ValueError(f"SetCriterion: unknown losses {unknown}; choose from {_LOSS_NAMES}")
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.focal_alpha = focal_alpha
        self.losses = list(losses)
        self.group_detr = group_detr
        self.ia_bce_loss = ia_bce_loss
        self.mask_point_sample_ratio = mask_point_sample_ratio

    def forward(
        self,
        outputs: dict[str, Any],
        targets: list[dict[str, Tensor]],
        num_boxes: float | Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Compute all configured losses of all output layers.

        Args:
            outputs: ``pred_logits`` ``[B, Q, C+1]``, ``pred_boxes`` ``[B, Q, 4]`` normalised
                cxcywh, optional ``pred_masks`` (dense ``[B, Q, h, w]`` logits or the factored
                dict of :mod:`point_sampling`), optional ``aux_outputs`` (list of dicts with the
                same keys, one per earlier decoder layer) and ``enc_outputs`` (same keys).
            targets: one dict per image with ``labels`` int64 ``[T]`` (0-based), ``boxes``
                ``[T, 4]`` normalised cxcywh and, for masks, ``masks`` ``[T, H, W]``.
            num_boxes: the normaliser (clamped to >= 1); ``None``: :meth:`num_boxes_for_targets`.
                With gradient accumulation pass the whole step's count x group_detr
                (:func:`reduce_num_boxes`): the summed micro-batch losses are then the big batch's.

        Returns:
            Loss name -> scalar tensor. Final-layer names are bare (``loss_ce``); earlier decoder
            layers add ``_{i}`` and encoder outputs ``_enc``. ``class_error`` (final layer) and
            ``cardinality_error`` are detached metrics without a weight.
        """
        group_detr = self.group_detr if self.training else 1
        layers = [("", outputs)]
        layers += [(f"_{i}", aux) for i, aux in enumerate(outputs.get("aux_outputs", []))]
        if "enc_outputs" in outputs:
            layers.append(("_enc", outputs["enc_outputs"]))
        # Match every layer before computing any loss: the same order of random draws as upstream
        # (matcher mask points first, then loss points), which the parity benchmark relies on.
        matches = [self.matcher(layer, targets, group_detr=group_detr) for _, layer in layers]
        device = outputs["pred_logits"].device
        if num_boxes is None:
            normaliser = self.num_boxes_for_targets(targets, device)
        else:
            normaliser = torch.as_tensor(num_boxes, dtype=torch.float32, device=device).clamp(min=1)

        losses: dict[str, Tensor] = {}
        for (suffix, layer), indices in zip(layers, matches, strict=True):
            for name in self.losses:
                if name == "cardinality":
                    values = self.loss_cardinality(layer, targets)
                elif name == "labels":
                    values = self.loss_labels(layer, targets, indices, normaliser, log=not suffix)
                else:
                    loss = self.loss_boxes if name == "boxes" else self.loss_masks
                    values = loss(layer, targets, indices, normaliser)
                losses.update({key + suffix: value for key, value in values.items()})
        return losses

    def total_loss(self, loss_dict: Mapping[str, Tensor]) -> Tensor:
        """Weighted sum of the losses that have a weight in :attr:`weight_dict`."""
        return weighted_loss(loss_dict, self.weight_dict)

    def num_boxes_for_targets(
        self, targets: list[dict[str, Tensor]], device: torch.device
    ) -> Tensor:
        """Upstream's normaliser: boxes in ``targets`` x active groups, rank-averaged, >= 1."""
        group_detr = self.group_detr if self.training else 1
        return reduce_num_boxes(count_boxes(targets) * group_detr, device)

    def loss_labels(
        self,
        outputs: dict[str, Any],
        targets: list[dict[str, Tensor]],
        indices: MatchIndices,
        num_boxes: Tensor,
        log: bool = True,
    ) -> dict[str, Tensor]:
        """``loss_ce`` over all ``[B, Q, C+1]`` logits, and ``class_error`` (%) when ``log``."""
        logits = outputs["pred_logits"]
        if logits.shape[-1] < self.num_classes:
            raise ValueError(
                f"pred_logits has {logits.shape[-1]} classes, the criterion {self.num_classes}"
            )
        logits32 = logits.float()  # the loss sums Q x C terms: keep them in fp32 under AMP
        batch_idx, query_idx = _query_index(indices, logits.device)
        labels = _matched(targets, indices, "labels", logits.device)
        if self.ia_bce_loss:
            pred_boxes = outputs["pred_boxes"][batch_idx, query_idx].detach().float()
            target_boxes = _matched(targets, indices, "boxes", logits.device).float()
            iou, _ = elementwise_box_iou(
                box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(target_boxes)
            )
            loss = self._ia_bce(logits32, (batch_idx, query_idx, labels), iou)
        else:
            loss = self._focal(logits32, (batch_idx, query_idx, labels))
        result = {"loss_ce": loss.sum() / num_boxes}
        if log:
            with torch.no_grad():
                matched_logits = logits[batch_idx, query_idx]
                correct = (matched_logits.argmax(-1) == labels).float().sum()
                accuracy = 100.0 * correct / max(labels.numel(), 1)
                # No matches counts as 0 % accuracy, as upstream's metric does.
                result["class_error"] = 100.0 - accuracy
        return result

    def _ia_bce(
        self, logits: Tensor, positives: tuple[Tensor, Tensor, Tensor], iou: Tensor
    ) -> Tensor:
        """Element-wise IoU-aware BCE ``[B, Q, K]``: matched logits get the soft target
        ``t = max(p^a * IoU^(1-a), 0.01)``, the others are negatives weighted ``p^gamma`` (which,
        as upstream, keeps its gradient)."""
        prob = logits.sigmoid()
        pos_weight = torch.zeros_like(logits)
        neg_weight = prob**FOCAL_GAMMA
        alpha = self.focal_alpha
        soft = (prob[positives].pow(alpha) * iou.pow(1 - alpha)).clamp(min=0.01).detach()
        pos_weight[positives] = soft
        neg_weight[positives] = 1 - soft
        # -w_pos*log(p) - w_neg*log(1-p), with log(1-p) = logsigmoid(x) - x for stability.
        return neg_weight * logits - F.logsigmoid(logits) * (pos_weight + neg_weight)

    def _focal(self, logits: Tensor, positives: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        """Element-wise sigmoid focal loss ``[B, Q, K]`` against one-hot matched classes."""
        onehot = torch.zeros_like(logits)
        onehot[positives] = 1.0
        prob = logits.sigmoid()
        bce = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
        p_t = prob * onehot + (1 - prob) * (1 - onehot)
        alpha_t = self.focal_alpha * onehot + (1 - self.focal_alpha) * (1 - onehot)
        return alpha_t * bce * (1 - p_t) ** FOCAL_GAMMA

    def loss_boxes(
        self,
        outputs: dict[str, Any],
        targets: list[dict[str, Tensor]],
        indices: MatchIndices,
        num_boxes: Tensor,
    ) -> dict[str, Tensor]:
        """``loss_bbox`` (L1, normalised cxcywh) and ``loss_giou`` (1 - GIoU) of the matches."""
        pred = outputs["pred_boxes"]
        batch_idx, query_idx = _query_index(indices, pred.device)
        pred_boxes = pred[batch_idx, query_idx].float()
        target_boxes = _matched(targets, indices, "boxes", pred.device).float()
        l1 = F.l1_loss(pred_boxes, target_boxes, reduction="none").sum()
        giou = elementwise_generalized_box_iou(
            box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(target_boxes)
        )
        return {"loss_bbox": l1 / num_boxes, "loss_giou": (1 - giou).sum() / num_boxes}

    def loss_masks(
        self,
        outputs: dict[str, Any],
        targets: list[dict[str, Tensor]],
        indices: MatchIndices,
        num_boxes: Tensor,
    ) -> dict[str, Tensor]:
        """``loss_mask_ce`` and ``loss_mask_dice`` of the matches at uncertainty-sampled points."""
        pred_masks = outputs["pred_masks"]
        device = outputs["pred_logits"].device
        batch_idx, query_idx = _query_index(indices, device)
        src = gather_matched_masks(pred_masks, batch_idx, query_idx)  # [N, h, w]
        if src.shape[0] == 0:
            zero = src.sum()  # 0, yet still attached to the mask head's graph
            return {"loss_mask_ce": zero, "loss_mask_dice": zero}
        src = src.unsqueeze(1).float()
        height, width = src.shape[-2:]
        num_points = max(height, height * width // self.mask_point_sample_ratio)
        with torch.no_grad():
            points = sample_uncertain_points(src, num_points)
            labels = _sample_target_masks(targets, indices, points)
        point_logits = point_sample(src, points).squeeze(1)  # [N, P]
        bce = F.binary_cross_entropy_with_logits(point_logits, labels, reduction="none").mean(1)
        prob = point_logits.sigmoid()
        dice = 1 - (2 * (prob * labels).sum(-1) + 1) / (prob.sum(-1) + labels.sum(-1) + 1)
        return {"loss_mask_ce": bce.sum() / num_boxes, "loss_mask_dice": dice.sum() / num_boxes}

    @torch.no_grad()
    def loss_cardinality(
        self, outputs: dict[str, Any], targets: list[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        """``cardinality_error``: mean |#queries with max prob > 0.5 - #targets| (a metric)."""
        logits = outputs["pred_logits"]
        predicted = (logits.sigmoid().amax(-1) > 0.5).sum(1).float()
        expected = torch.as_tensor([float(len(t["labels"])) for t in targets], device=logits.device)
        return {"cardinality_error": F.l1_loss(predicted, expected)}


def count_boxes(targets: list[dict[str, Tensor]]) -> int:
    """Number of ground-truth objects in a list of per-image targets."""
    return sum(len(target["labels"]) for target in targets)


def reduce_num_boxes(num_boxes: float, device: torch.device) -> Tensor:
    """Turn a local box count (already multiplied by ``group_detr`` where that applies) into the
    loss normaliser, a ``[]`` float32 tensor on ``device`` (the collective's under NCCL): under
    ``torch.distributed`` the mean over ranks (DDP averages gradients; every rank must call this
    together), clamped to >= 1."""
    total = torch.as_tensor(float(num_boxes), dtype=torch.float32, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
        total = total / dist.get_world_size()
    return total.clamp(min=1.0)


def weighted_loss(loss_dict: Mapping[str, Tensor], weight_dict: Mapping[str, float]) -> Tensor:
    """``sum(loss_dict[k] * weight_dict[k])`` over keys present in both (metrics have no weight)."""
    terms = [loss_dict[key] * weight for key, weight in weight_dict.items() if key in loss_dict]
    if not terms:
        raise ValueError("weighted_loss: no loss in loss_dict has a weight in weight_dict")
    return torch.stack([term.float() for term in terms]).sum()


def build_weight_dict(
    num_decoder_layers: int,
    *,
    two_stage: bool = True,
    segmentation: bool = False,
    aux_loss: bool = True,
    cls_loss_coef: float | None = None,
    bbox_loss_coef: float = 5.0,
    giou_loss_coef: float = 2.0,
    mask_ce_loss_coef: float = 5.0,
    mask_dice_loss_coef: float = 5.0,
) -> dict[str, float]:
    """Upstream-style loss weights (loss key -> weight), with ``aux_loss`` replicated for the
    earlier decoder layers ``0 .. num_decoder_layers - 2`` (``_{i}`` keys) and, with
    ``two_stage``, the encoder proposals (``_enc``); ``segmentation`` adds the mask losses.
    ``cls_loss_coef`` (of ``loss_ce``) None means 1.0 for detection and segmentation alike
    (upstream 1.11.2's ``SegmentationTrainConfig``: the 5.0 activated in v1.7 was a regression;
    pass 5.0 to reproduce it)."""
    ce = 1.0 if cls_loss_coef is None else cls_loss_coef
    base = {"loss_ce": ce, "loss_bbox": bbox_loss_coef, "loss_giou": giou_loss_coef}
    if segmentation:
        base |= {"loss_mask_ce": mask_ce_loss_coef, "loss_mask_dice": mask_dice_loss_coef}
    suffixes = [""]
    if aux_loss:
        suffixes += [f"_{i}" for i in range(num_decoder_layers - 1)]
        suffixes += ["_enc"] if two_stage else []
    return {key + suffix: value for suffix in suffixes for key, value in base.items()}


def _query_index(indices: MatchIndices, device: torch.device) -> tuple[Tensor, Tensor]:
    """Flatten per-image matches into ``(batch_idx, query_idx)``, both ``[N]``, image-major."""
    batch = [torch.full_like(query, b) for b, (query, _) in enumerate(indices)]
    queries = [query for query, _ in indices]
    return torch.cat(batch).to(device), torch.cat(queries).to(device)


def _matched(
    targets: list[dict[str, Tensor]], indices: MatchIndices, key: str, device: torch.device
) -> Tensor:
    """``targets[b][key][target_idx]`` concatenated in match order."""
    parts = [t[key][tgt.to(t[key].device)] for t, (_, tgt) in zip(targets, indices, strict=True)]
    return torch.cat(parts).to(device)


def _sample_target_masks(
    targets: list[dict[str, Tensor]], indices: MatchIndices, points: Tensor
) -> Tensor:
    """Matched target masks at ``points`` ``[N, P, 2]`` as ``[N, P]`` floats, image by image
    (canvases may differ; one image's masks in float at a time)."""
    sampled, offset = [], 0
    for target, (_, tgt) in zip(targets, indices, strict=True):
        if tgt.numel() == 0:
            continue
        masks = target["masks"][tgt.to(target["masks"].device)].to(points.device, torch.float32)
        count = masks.shape[0]
        chunk = points[offset : offset + count]
        sampled.append(point_sample(masks.unsqueeze(1), chunk, mode="nearest").squeeze(1))
        offset += count
    return torch.cat(sampled)
