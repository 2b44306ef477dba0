"""`ExportModule`: the eager `RFDETR` in inference mode, traceable for one input size.

The model's own ``forward`` runs on a copy with folded ViT blocks (`ViTBlock.deploy`); with the
spatial size fixed, input-independent tensors (position table, proposals, queries) become
constants. Inputs and outputs: upstream's ONNX contract, listed in `rfdetr.export.metadata`.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from rfdetr.models.detector import RFDETR
from rfdetr.models.postprocess import PostProcess


class ExportModule(nn.Module):
    """The inference graph of an `RFDETR` model for one input size (see the module docstring).

    Args:
        model: the trained model (copied: its ``forward`` and weights stay as they are).
        shape: input ``(height, width)``; multiples of ``patch_size * num_windows``.
        num_select: append `PostProcess.select` keeping this many detections (a second input
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
        self.postprocess = None if num_select is None else PostProcess(num_select, class_columns)
        vit = self.model.backbone[0].encoder.encoder
        for block in vit.encoder.layer:
            block.deploy()
        with torch.no_grad():  # cache the interpolated position table: a constant when traced
            vit.embeddings.position_embedding(
                shape[0] // vit.patch_size, shape[1] // vit.patch_size
            )

    def forward(self, images: Tensor, orig_size: Tensor | None = None) -> tuple[Tensor, ...]:
        """``images`` ``[B, 3, H, W]`` normalised -> ``(dets, labels[, masks])``, with
        post-processing ``(boxes, scores, class_ids[, masks])`` (`rfdetr.export.metadata`)."""
        out = self.model(images, with_aux=False)
        dets, labels, masks = out["pred_boxes"], out["pred_logits"], out.get("pred_masks")
        if self.postprocess is not None:
            if orig_size is None:
                raise ValueError("the post-processing graph needs orig_size [B, 2]")
            return self.postprocess.select(labels, dets, orig_size, masks)
        return (dets, labels) if masks is None else (dets, labels, masks)
