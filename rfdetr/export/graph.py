"""`ExportModule`: the eager `RFDETR` in inference mode, traceable for one input size.

The model's own ``forward`` runs on a copy with folded ViT blocks (`ViTBlock.deploy`); with the
spatial size fixed, input-independent tensors (position table, proposals, queries) become
constants. Outputs (upstream's ONNX contract): ``dets`` ``[B, Q, 4]`` normalised cxcywh,
``labels`` ``[B, Q, C+1]`` logits, Seg: ``masks`` ``[B, Q, H/4, W/4]`` logits; with
`TopKPostProcess`: a second input ``orig_size`` ``[B, 2]`` (h, w), outputs ``boxes`` ``[B, K, 4]``
pixel xyxy, ``scores`` ``[B, K]``, ``class_ids`` ``[B, K]`` int64 (Seg: ``masks``
``[B, K, H/4, W/4]``).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from rfdetr.models.detector import RFDETR
from rfdetr.utils.box_ops import box_cxcywh_to_xyxy


class TopKPostProcess(nn.Module):
    """`rfdetr.models.postprocess.PostProcess` as graph ops, without the threshold; also what
    evaluation takes the kept queries' raw masks from (`rfdetr.evaluation.predictions`).

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
        """Raw outputs + ``orig_size`` -> the top-k detections (shapes: module docstring)."""
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


class ExportModule(nn.Module):
    """The inference graph of an `RFDETR` model for one input size (see the module docstring).

    Args:
        model: the trained model (copied: its ``forward`` and weights stay as they are).
        shape: input ``(height, width)``; multiples of ``patch_size * num_windows``.
        num_select: append `TopKPostProcess` keeping this many detections (a second input
            ``orig_size``); None: the raw outputs.
        class_columns: the logit column of each class id for it (None: column i is class i).
    """

    def __init__(
        self,
        model: RFDETR,
        shape: tuple[int, int],
        num_select: int | None = None,
        class_columns: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.model = copy.deepcopy(model)
        self.queries = model.num_queries
        self.logits = model.class_embed.out_features
        head = model.segmentation_head
        self.mask_size = None
        if head is not None:
            self.mask_size = (shape[0] // head.downsample_ratio, shape[1] // head.downsample_ratio)
        self.postprocess = (
            TopKPostProcess(num_select, self.queries, self.logits, class_columns, self.mask_size)
            if num_select is not None
            else None
        )
        vit = self.model.backbone[0].encoder.encoder
        for block in vit.encoder.layer:
            block.deploy()
        with torch.no_grad():  # cache the interpolated position table: a constant when traced
            vit.embeddings.position_embedding(
                shape[0] // vit.patch_size, shape[1] // vit.patch_size
            )

    def forward(self, images: Tensor, orig_size: Tensor | None = None) -> tuple[Tensor, ...]:
        """``images`` ``[B, 3, H, W]`` normalised -> ``(dets, labels[, masks])``.

        With post-processing, ``(boxes, scores, class_ids[, masks])`` (see the module docstring).
        """
        out = self.model(images, with_aux=False)
        dets, labels, masks = out["pred_boxes"], out["pred_logits"], out.get("pred_masks")
        if self.postprocess is not None:
            if orig_size is None:
                raise ValueError("the post-processing graph needs orig_size [B, 2]")
            return self.postprocess(dets, labels, masks, orig_size)
        return (dets, labels) if masks is None else (dets, labels, masks)

    @property
    def input_names(self) -> list[str]:
        """ONNX input names."""
        return ["input", "orig_size"] if self.postprocess is not None else ["input"]

    @property
    def output_shapes(self) -> list[tuple[int, ...]]:
        """Shape of each output without the batch axis, in `output_names` order."""
        mask = [self.mask_size] if self.mask_size is not None else []
        if self.postprocess is not None:
            k = self.postprocess.k
            return [(k, 4), (k,), (k,)] + [(k, *m) for m in mask]
        return [(self.queries, 4), (self.queries, self.logits)] + [(self.queries, *m) for m in mask]

    @property
    def output_names(self) -> list[str]:
        """ONNX output names, in the order `forward` returns them."""
        names = (
            ["boxes", "scores", "class_ids"] if self.postprocess is not None else ["dets", "labels"]
        )
        return names + (["masks"] if self.mask_size is not None else [])
