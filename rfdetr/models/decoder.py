"""Lightweight deformable decoder (LW-DETR style, post-norm) with Group DETR self-attention.

With ``lite_refpoint_refine`` (every RF-DETR size) the reference boxes are not refined layer by
layer: all layers use the two-stage reference, and the heads predict deltas on it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rfdetr.models.deformable_attention import MSDeformAttn
from rfdetr.models.layers import MLP


def sine_embed_boxes(boxes: Tensor, num_feats: int = 128, temperature: int = 10000) -> Tensor:
    """Sinusoidal embedding ``[B, Q, 4 * num_feats]`` of ``[B, Q, 4]`` normalised cxcywh boxes,
    ``num_feats`` features per coordinate, in upstream's order y, x, w, h."""
    dim_t = torch.arange(num_feats, dtype=boxes.dtype, device=boxes.device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_feats)

    def embed(coord: Tensor) -> Tensor:
        pos = coord[:, :, None] * (2 * math.pi) / dim_t
        return torch.stack((pos[:, :, 0::2].sin(), pos[:, :, 1::2].cos()), dim=3).flatten(2)

    x, y, w, h = boxes.unbind(-1)
    return torch.cat([embed(y), embed(x), embed(w), embed(h)], dim=2)


class DecoderLayer(nn.Module):
    """Self-attention (within query groups) -> deformable cross-attention -> FFN, each post-norm.

    Args:
        d_model: query width.
        sa_nheads, ca_nheads: heads of self- and cross-attention.
        dim_feedforward: FFN hidden width.
        n_levels, n_points: deformable attention levels and points.
        group_detr: query groups; in training, queries attend only within their group.
    """

    def __init__(
        self,
        d_model: int,
        sa_nheads: int,
        ca_nheads: int,
        dim_feedforward: int,
        n_levels: int,
        n_points: int,
        group_detr: int,
    ) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, sa_nheads, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = MSDeformAttn(d_model, n_levels, ca_nheads, n_points)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.group_detr = group_detr

    def forward(
        self,
        tgt: Tensor,
        query_pos: Tensor,
        reference_boxes: Tensor,
        memory: Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> Tensor:
        """``tgt``, ``query_pos``: ``[B, Q, C]``; ``reference_boxes``: ``[B, Q, 1, 4]``."""
        batch, queries, _ = tgt.shape
        q = tgt + query_pos
        v = tgt
        groups = self.group_detr if self.training else 1
        if groups > 1:
            # Groups into the batch ([B * G, Q/G, C], a view): attention never crosses a group.
            q = q.reshape(batch * groups, queries // groups, -1)
            v = v.reshape(batch * groups, queries // groups, -1)
        attended = self.self_attn(q, q, v, need_weights=False)[0]
        if groups > 1:
            attended = attended.reshape(batch, queries, -1)
        tgt = self.norm1(tgt + attended)
        attended = self.cross_attn(tgt + query_pos, reference_boxes, memory, spatial_shapes)
        tgt = self.norm2(tgt + attended)
        return self.norm3(tgt + self.linear2(F.relu(self.linear1(tgt))))


class Decoder(nn.Module):
    """A stack of `DecoderLayer` sharing one reference box per query."""

    def __init__(self, layers: list[DecoderLayer], d_model: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(d_model)
        self.ref_point_head = MLP(2 * d_model, d_model, d_model, 2)
        self.d_model = d_model

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        reference_boxes: Tensor,
        spatial_shapes: list[tuple[int, int]],
        all_layers: bool = True,
    ) -> Tensor:
        """Decode queries against the memory.

        Args:
            tgt: ``[B, Q, C]`` content queries.
            memory: ``[B, S, C]`` flattened projector output.
            reference_boxes: ``[B, Q, 4]`` normalised cxcywh.
            spatial_shapes: ``(h_l, w_l)`` of each memory level.
            all_layers: return every layer's output (training) or only the last (inference).

        Returns:
            ``[L, B, Q, C]`` normalised outputs (``L = 1`` when ``all_layers`` is False).
        """
        query_pos = self.ref_point_head(sine_embed_boxes(reference_boxes, self.d_model // 2))
        reference = reference_boxes[:, :, None]
        outputs = []
        for index, layer in enumerate(self.layers):
            tgt = layer(tgt, query_pos, reference, memory, spatial_shapes)
            if all_layers or index == len(self.layers) - 1:
                outputs.append(self.norm(tgt))
        return torch.stack(outputs)
