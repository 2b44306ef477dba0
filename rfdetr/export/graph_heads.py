"""Top-k post-processing of the export graph: `rfdetr.models.postprocess.PostProcess` as graph
ops (no threshold: the graph returns all ``num_select`` detections, sorted by score).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rfdetr.utils.box_ops import box_cxcywh_to_xyxy


class TopKPostProcess(nn.Module):
    """`rfdetr.models.postprocess.PostProcess` as graph ops, without the threshold.

    Args:
        num_select: detections kept per image (top-k over queries x classes).
        num_queries: queries of the raw outputs.
        num_logits: columns of the raw ``labels`` (classes + 1).
        class_columns: logit column of each class id; None = every column but the last.
        mask_size: ``(H/4, W/4)`` of the raw masks (Seg models), else None.
    """

    def __init__(
        self,
        num_select: int,
        num_queries: int,
        num_logits: int,
        class_columns: list[int] | None = None,
        mask_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.queries = num_queries
        self.mask_size = mask_size
        self.classes = len(class_columns) if class_columns is not None else num_logits - 1
        self.k = min(num_select, num_queries * self.classes)
        columns = torch.as_tensor(class_columns or [], dtype=torch.long)
        self.register_buffer("columns", columns, persistent=False)
        self.use_columns = class_columns is not None

    def forward(
        self, dets: Tensor, labels: Tensor, masks: Tensor | None, orig_size: Tensor
    ) -> tuple[Tensor, ...]:
        """Raw outputs + ``orig_size`` ``[B, 2]`` (height, width) -> the top-k detections.

        Returns ``boxes`` ``[B, K, 4]`` pixel xyxy, ``scores`` ``[B, K]``, ``class_ids``
        ``[B, K]`` and, for Seg models, the kept queries' ``masks`` ``[B, K, H/4, W/4]``.
        """
        logits = labels.index_select(-1, self.columns) if self.use_columns else labels[..., :-1]
        scores = logits.sigmoid().reshape(-1, self.queries * self.classes)
        top_scores, top_index = torch.topk(scores, self.k, dim=1)
        query_index = torch.div(top_index, self.classes, rounding_mode="floor")
        class_ids = top_index - query_index * self.classes
        boxes = torch.gather(box_cxcywh_to_xyxy(dets), 1, query_index[..., None].expand(-1, -1, 4))
        height, width = orig_size.to(boxes.dtype).unbind(1)
        scale = torch.stack([width, height, width, height], dim=1)[:, None, :]
        boxes = torch.minimum((boxes * scale).clamp(min=0), scale)
        out: tuple[Tensor, ...] = (boxes, top_scores, class_ids)
        if masks is not None and self.mask_size is not None:
            height, wide = self.mask_size
            rows = masks.reshape(-1, self.queries, height * wide)
            picked = torch.gather(rows, 1, query_index[..., None].expand(-1, -1, height * wide))
            out = (*out, picked.reshape(-1, self.k, height, wide))
        return out
