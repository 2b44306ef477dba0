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

    @torch.no_grad()
    def forward(
        self,
        outputs: dict[str, Tensor],
        target_sizes: Tensor,
        threshold: float | Tensor | None = None,
    ) -> list[dict[str, Tensor]]:
        """Post-process a batch.

        Args:
            outputs: ``pred_logits`` ``[B, Q, C+1]``, ``pred_boxes`` ``[B, Q, 4]`` normalised
                cxcywh, optionally ``pred_masks`` ``[B, Q, h, w]`` logits.
            target_sizes: ``[B, 2]`` original ``(height, width)`` of each image.
            threshold: drop detections scoring at or below it (masks are then resized only
                for the kept ones); a ``[C]`` tensor holds one per class id; None keeps all
                ``num_select``.

        Returns:
            Per image: ``scores`` ``[K]``, ``labels`` ``[K]`` int64, ``boxes`` ``[K, 4]`` pixel
            xyxy clamped to the image, and for Seg models ``masks`` ``[K, H, W]`` bool.
        """
        logits = outputs["pred_logits"]
        if self.class_columns is None:
            logits = logits[..., :-1]
        else:
            columns = torch.as_tensor(self.class_columns, device=logits.device)
            logits = logits.index_select(-1, columns)
        batch, _, classes = logits.shape
        scores = logits.sigmoid().reshape(batch, -1)
        k = min(self.num_select, scores.shape[1])
        top_scores, top_index = torch.topk(scores, k, dim=1)
        query_index = top_index // classes
        labels = top_index % classes
        boxes = box_cxcywh_to_xyxy(outputs["pred_boxes"])
        boxes = torch.gather(boxes, 1, query_index[..., None].expand(-1, -1, 4))
        height, width = target_sizes.to(boxes.dtype).unbind(1)
        scale = torch.stack([width, height, width, height], dim=1)[:, None, :]
        boxes = torch.minimum((boxes * scale).clamp(min=0), scale)
        results = []
        for i in range(batch):
            if threshold is None:
                keep = slice(None)
            elif isinstance(threshold, Tensor):  # per class: each row against its class's
                keep = top_scores[i] > threshold.to(top_scores.device)[labels[i]]
            else:
                keep = top_scores[i] > threshold
            result = {
                "scores": top_scores[i][keep],
                "labels": labels[i][keep],
                "boxes": boxes[i][keep],
            }
            if "pred_masks" in outputs:
                chosen = outputs["pred_masks"][i][query_index[i][keep]]
                size = (int(target_sizes[i, 0]), int(target_sizes[i, 1]))
                result["masks"] = resize_masks(chosen, size)
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
