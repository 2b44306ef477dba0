"""Turn raw model outputs into per-image detections: top-k over queries x classes, no NMS."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rfdetr.utils.box_ops import box_cxcywh_to_xyxy


class PostProcess(nn.Module):
    """Select the ``num_select`` best (query, class) pairs of every image.

    Scores are per-class sigmoids over the columns of real classes; a label is its column's
    position in ``class_columns`` (a contiguous 0-based id). Default ``0 .. C-1``; COCO-pretrained
    weights (sparse COCO-id columns) pass the 80 used ids.

    Args:
        num_select: detections kept per image before any threshold.
        class_columns: logit column of each class, in class-id order; None = all but the last.
    """

    def __init__(self, num_select: int = 300, class_columns: list[int] | None = None) -> None:
        super().__init__()
        self.num_select = num_select
        self.class_columns = class_columns

    def select(
        self, logits: Tensor, boxes: Tensor, orig_size: Tensor, masks: Tensor | None = None
    ) -> tuple[Tensor, ...]:
        """The top-k of a batch without threshold, in traceable ops (the ONNX post-processing).

        Args:
            logits: ``[B, Q, C+1]`` raw class logits.
            boxes: ``[B, Q, 4]`` normalised cxcywh.
            orig_size: ``[B, 2]`` original ``(height, width)`` of each image.
            masks: ``[B, Q, h, w]`` mask logits (Seg models), or None.

        Returns:
            ``boxes`` ``[B, K, 4]`` pixel xyxy clamped to the image, ``scores`` ``[B, K]``
            (descending), ``labels`` ``[B, K]`` int64, and with ``masks`` the kept queries' mask
            logits ``[B, K, h, w]``; ``K = min(num_select, Q * C)``.
        """
        if self.class_columns is None:
            logits = logits[..., :-1]
        else:
            columns = torch.as_tensor(self.class_columns, device=logits.device)
            logits = logits.index_select(-1, columns)
        _, queries, classes = (int(n) for n in logits.shape)  # ints: constants when traced
        k = min(self.num_select, queries * classes)
        scores = logits.sigmoid().reshape(-1, queries * classes)
        top_scores, top_index = torch.topk(scores, k, dim=1)
        query_index = torch.div(top_index, classes, rounding_mode="floor")
        labels = top_index - query_index * classes
        boxes = torch.gather(box_cxcywh_to_xyxy(boxes), 1, query_index[..., None].expand(-1, -1, 4))
        height, width = orig_size.to(boxes.dtype).unbind(1)
        scale = torch.stack([width, height, width, height], dim=1)[:, None, :]
        out = (torch.minimum((boxes * scale).clamp(min=0), scale), top_scores, labels)
        if masks is None:
            return out
        height, width = (int(n) for n in masks.shape[2:])
        rows = masks.reshape(-1, queries, height * width)
        picked = torch.gather(rows, 1, query_index[..., None].expand(-1, -1, height * width))
        return (*out, picked.reshape(-1, k, height, width))

    @torch.no_grad()
    def forward(
        self,
        outputs: dict[str, Tensor],
        target_sizes: Tensor,
        threshold: float | Tensor | None = None,
    ) -> list[dict[str, Tensor]]:
        """Post-process a batch: `select`, then the threshold and full-size masks per image.

        Args:
            outputs: ``pred_logits``, ``pred_boxes`` (, ``pred_masks``): `select`'s ``logits``,
                ``boxes`` (, ``masks``).
            target_sizes: `select`'s ``orig_size``.
            threshold: drop detections scoring at or below it (masks are then resized only
                for the kept ones); a ``[C]`` tensor holds one per class id; None keeps all
                ``num_select``.

        Returns:
            Per image: ``scores`` ``[K]``, ``labels`` ``[K]`` int64, ``boxes`` ``[K, 4]`` pixel
            xyxy clamped to the image, and for Seg models ``masks`` ``[K, H, W]`` bool.
        """
        masks = outputs.get("pred_masks")
        boxes, scores, labels, *picked = self.select(
            outputs["pred_logits"], outputs["pred_boxes"], target_sizes, masks
        )
        if threshold is None:
            keep = torch.ones_like(scores, dtype=torch.bool)
        elif isinstance(threshold, Tensor):  # per class: each row against its class's
            keep = scores > threshold.to(scores.device)[labels]
        else:
            keep = scores > threshold
        results = []
        for i, kept in enumerate(keep):
            result = {"scores": scores[i][kept], "labels": labels[i][kept], "boxes": boxes[i][kept]}
            if picked:
                size = (int(target_sizes[i, 0]), int(target_sizes[i, 1]))
                result["masks"] = resize_masks(picked[0][i][kept], size)
            results.append(result)
        return results


def resize_masks(mask_logits: Tensor, size: tuple[int, int], chunk: int = 32) -> Tensor:
    """``[K, h, w]`` logits -> ``[K, H, W]`` bool masks (bilinear, logit > 0), in chunks."""
    out = torch.empty((mask_logits.shape[0], *size), dtype=torch.bool, device=mask_logits.device)
    for start in range(0, mask_logits.shape[0], chunk):
        part = mask_logits[start : start + chunk, None]
        resized = F.interpolate(part, size=size, mode="bilinear", align_corners=False)
        out[start : start + chunk] = resized[:, 0] > 0
    return out
