"""Output heads of the export graph: the mask head and top-k post-processing.

`MaskGraph` computes the segmentation head for the last decoder layer only, with the 1x1 pixel
projection folded into the query kernels (``Q x C x C`` multiply-adds instead of
``H/4 x W/4 x C x C``). `TopKPostProcess` is `rfdetr.models.postprocess.PostProcess` as graph
ops (no threshold: the graph returns all ``num_select`` detections, sorted by score).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rfdetr.export.graph_backbone import layer_norm_rows
from rfdetr.models.detector import RFDETR
from rfdetr.utils.box_ops import box_cxcywh_to_xyxy


class MaskGraph(nn.Module):
    """The segmentation head for the last decoder layer, pixel projection folded into kernels."""

    def __init__(self, model: RFDETR, image_size: tuple[int, int]) -> None:
        super().__init__()
        head = model.segmentation_head
        ratio = head.downsample_ratio
        self.size = (image_size[0] // ratio, image_size[1] // ratio)
        self.head = head
        width = head.query_features_proj.out_features
        with torch.no_grad():
            # masks = k @ (Ws x + bs) + bias with k = Wq m + bq, i.e. (Ws^T Wq) m + Ws^T bq
            # dotted with x, plus (bs . k + bias): one [C + 1, C] Gemm on the queries.
            spatial = head.spatial_features_proj
            ws = spatial.weight.reshape(width, width).double()
            bs = spatial.bias.double()
            wq = head.query_features_proj.weight.double()
            bq = head.query_features_proj.bias.double()
            weight = torch.cat([ws.t() @ wq, (bs @ wq)[None]])
            bias = torch.cat([ws.t() @ bq, (bs @ bq + head.bias.double()).reshape(1)])
            self.register_buffer("kernel_weight", weight.float())
            self.register_buffer("kernel_bias", bias.float())
        self.width = width

    def forward(
        self, spatial_rows: Tensor, grid: tuple[int, int], hs: Tensor, queries: int
    ) -> Tensor:
        """Projector rows ``[B * h * w, C]`` and decoder rows ``[B * Q, C]`` -> masks.

        Returns ``[B, Q, H/r, W/r]`` logits.
        """
        width, (height, wide) = self.width, self.size
        spatial = spatial_rows.reshape(-1, grid[0], grid[1], width).permute(0, 3, 1, 2)
        x = F.interpolate(spatial, size=self.size, mode="bilinear", align_corners=False)
        for block in self.head.blocks:
            y = block.dwconv(x).permute(0, 2, 3, 1).reshape(-1, width)
            y = F.gelu(block.pwconv1(layer_norm_rows(y, block.norm)))
            x = x + y.reshape(-1, height, wide, width).permute(0, 3, 1, 2)
        kernels = F.linear(self.head.query_features_block(hs), self.kernel_weight, self.kernel_bias)
        kernels = kernels.reshape(-1, queries, width + 1)
        masks = kernels[..., :width] @ x.reshape(-1, width, height * wide) + kernels[..., width:]
        return masks.reshape(-1, queries, height, wide)


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
