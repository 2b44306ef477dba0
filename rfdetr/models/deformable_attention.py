"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch.

Sampling uses ``F.grid_sample`` (bilinear, zero padding, ``align_corners=False``), so the module
runs on any device and exports to ONNX (opset >= 16) without a custom kernel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def ms_deform_attn(
    value: Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """``[B, Q, H * D]``: the ``attention_weights`` ``[B, Q, H, L, P]`` (summing to 1 over
    ``L * P``) sum of bilinear samples of ``value`` ``[B, S, H, D]`` (per-head values of the
    levels ``spatial_shapes`` ``(h_l, w_l)``, flattened in that order: ``S = sum(h_l * w_l)``) at
    ``sampling_locations`` ``[B, Q, H, L, P, 2]``, normalised ``(x, y)`` in ``[0, 1]``."""
    batch, _, heads, head_dim = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    value_levels = value.split([h * w for h, w in spatial_shapes], dim=1)
    grids = 2 * sampling_locations - 1
    samples = []
    for level, (h, w) in enumerate(spatial_shapes):
        # [B, h*w, H, D] -> [B*H, D, h, w]
        v = value_levels[level].flatten(2).transpose(1, 2).reshape(batch * heads, head_dim, h, w)
        # [B, Q, H, P, 2] -> [B*H, Q, P, 2]
        g = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        samples.append(
            F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        )
    # [B*H, D, Q, L*P]
    sampled = samples[0] if levels == 1 else torch.stack(samples, dim=-2).flatten(-2)
    weights = attention_weights.transpose(1, 2).reshape(batch * heads, 1, queries, levels * points)
    out = (sampled * weights).sum(-1).view(batch, heads * head_dim, queries)
    return out.transpose(1, 2)


class MSDeformAttn(nn.Module):
    """Deformable cross-attention (width ``d_model``, ``n_heads`` heads) from queries to a
    flattened memory of ``n_levels`` levels, ``n_points`` sampling points per head and level."""

    def __init__(self, d_model: int = 256, n_levels: int = 1, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} must be divisible by n_heads {n_heads}")
        self.n_levels, self.n_heads, self.n_points = n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Offsets start as rings of points around the reference, one direction per head."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        directions = torch.stack([angles.cos(), angles.sin()], -1)
        directions = directions / directions.abs().max(-1, keepdim=True).values
        rings = directions.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        rings = rings * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(rings.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for projection in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(projection.weight)
            nn.init.zeros_(projection.bias)

    def forward(
        self,
        query: Tensor,
        reference_boxes: Tensor,
        memory: Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> Tensor:
        """``[B, Q, C]``: ``query`` ``[B, Q, C]`` (content + positional embedding) attending to
        ``memory`` ``[B, S, C]`` (levels ``spatial_shapes`` ``(h_l, w_l)``, flattened) around
        ``reference_boxes`` ``[B, Q, 1 or L, 4]`` normalised cxcywh: points are spread over half
        the box, ``offset / n_points * wh / 2`` around its centre."""
        batch, queries, _ = query.shape
        heads, levels, points = self.n_heads, self.n_levels, self.n_points
        value = self.value_proj(memory).view(batch, memory.shape[1], heads, -1)
        offsets = self.sampling_offsets(query).view(batch, queries, heads, levels, points, 2)
        weights = self.attention_weights(query).view(batch, queries, heads, levels * points)
        weights = weights.softmax(-1).view(batch, queries, heads, levels, points)
        ref = reference_boxes[:, :, None, :, None, :]
        locations = ref[..., :2] + offsets / points * ref[..., 2:] * 0.5
        return self.output_proj(ms_deform_attn(value, spatial_shapes, locations, weights))
