"""The RF-DETR detector: backbone -> two-stage selection -> decoder -> class, box, mask heads."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from rfdetr.models.backbone import Backbone
from rfdetr.models.deformable_attention import MSDeformAttn
from rfdetr.models.layers import MLP
from rfdetr.models.segmentation_head import SegmentationHead
from rfdetr.models.transformer import Transformer, apply_box_delta


class RFDETR(nn.Module):
    """RF-DETR for detection and, with a segmentation head, instance segmentation.

    Args:
        backbone: encoder + projector.
        transformer: two-stage selection + decoder.
        segmentation_head: mask head, or None for detection.
        num_classes: foreground classes; logits have ``num_classes + 1`` columns (the last is
            never a training target, as upstream).
        num_queries: detection slots per group.
        group_detr: query groups in training; inference keeps group 0.
    """

    def __init__(
        self,
        backbone: Backbone,
        transformer: Transformer,
        segmentation_head: SegmentationHead | None,
        num_classes: int,
        num_queries: int,
        group_detr: int,
    ) -> None:
        super().__init__()
        hidden_dim = transformer.d_model
        # A one-element list keeps upstream's checkpoint prefix `backbone.0.` (their slot 1 held
        # a parameter-free position encoding that the decoder never reads).
        self.backbone = nn.ModuleList([backbone])
        self.transformer = transformer
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        self.refpoint_embed = nn.Embedding(num_queries * group_detr, 4)
        self.query_feat = nn.Embedding(num_queries * group_detr, hidden_dim)
        self.segmentation_head = segmentation_head
        self.num_queries = num_queries
        self.group_detr = group_detr
        self._init_weights()

    def _init_weights(self) -> None:
        for p in self.transformer.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for module in self.transformer.modules():
            if isinstance(module, MSDeformAttn):
                module.reset_parameters()
        nn.init.zeros_(self.refpoint_embed.weight)
        # Prior probability 0.01 for every class keeps early focal-style losses stable.
        nn.init.constant_(self.class_embed.bias, -math.log((1 - 0.01) / 0.01))
        nn.init.zeros_(self.bbox_embed.layers[-1].weight)
        nn.init.zeros_(self.bbox_embed.layers[-1].bias)
        for g in range(self.group_detr):
            self.transformer.enc_out_class_embed[g].load_state_dict(self.class_embed.state_dict())
            self.transformer.enc_out_bbox_embed[g].load_state_dict(self.bbox_embed.state_dict())

    @property
    def num_classes(self) -> int:
        """Foreground classes (the head has one more output)."""
        return self.class_embed.out_features - 1

    def forward(self, images: Tensor, with_aux: bool | None = None) -> dict[str, Any]:
        """Detect objects in a batch of normalised images.

        Args:
            images: ``[B, 3, H, W]`` ImageNet-normalised RGB; H and W multiples of
                ``patch_size * num_windows``.
            with_aux: also return ``aux_outputs`` and ``enc_outputs`` (default: in training).

        Returns:
            ``pred_logits`` ``[B, Q, C+1]`` logits (sigmoid per class), ``pred_boxes``
            ``[B, Q, 4]`` normalised cxcywh, for Seg models ``pred_masks`` ``[B, Q, H/4, W/4]``
            logits; in training ``Q = group_detr * num_queries``. With aux: ``aux_outputs`` (one
            dict per earlier decoder layer) and ``enc_outputs`` (two-stage proposals). In
            training, masks come in the factored form of :mod:`point_sampling`.
        """
        with_aux = self.training if with_aux is None else with_aux
        queries = self.num_queries * (self.group_detr if self.training else 1)
        features = self.backbone[0](images)
        decoded = self.transformer(
            features,
            self.refpoint_embed.weight[:queries],
            self.query_feat.weight[:queries],
            all_layers=with_aux,
        )
        hs, reference = decoded["hs"], decoded["reference"]
        logits = self.class_embed(hs)
        boxes = apply_box_delta(self.bbox_embed(hs), reference)
        masks = self._masks(features[0], hs, images.shape[-2:], skip_blocks=False)

        def layer(i: int) -> dict[str, Any]:
            mask = {} if masks is None else {"pred_masks": masks[i]}
            return {"pred_logits": logits[i], "pred_boxes": boxes[i], **mask}

        out = layer(-1)
        if not with_aux:
            return out
        out["aux_outputs"] = [layer(i) for i in range(len(hs) - 1)]
        enc = {"pred_logits": decoded["enc_logits"], "pred_boxes": decoded["enc_boxes"]}
        enc_masks = self._masks(features[0], decoded["enc_hs"][None], images.shape[-2:], True)
        if enc_masks is not None:
            enc["pred_masks"] = enc_masks[0]
        out["enc_outputs"] = enc
        return out

    def _masks(
        self, spatial: Tensor, queries: Tensor, image_size: torch.Size, skip_blocks: bool
    ) -> list[Any] | None:
        head = self.segmentation_head
        if head is None:
            return None
        size = (int(image_size[0]), int(image_size[1]))
        pairs = head.layer_features(spatial, queries, size, skip_blocks)
        if self.training:
            return [
                {"spatial_features": pixels, "query_features": kernels, "bias": head.bias}
                for pixels, kernels in pairs
            ]
        return [head.masks_from(pixels, kernels) for pixels, kernels in pairs]
