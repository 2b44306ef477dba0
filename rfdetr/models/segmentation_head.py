"""Instance-mask head: dynamic per-query kernels dotted with a stride-4 pixel map.

The projector output is bilinearly up-sampled to 1/``downsample_ratio`` of the input and refined
by one depthwise-conv block per decoder layer; each layer's query features (through an MLP
block) are dotted with the refined map, plus a learned scalar bias, giving mask logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DepthwiseConvBlock(nn.Module):
    """Residual ``DW 3x3 -> LayerNorm -> Linear -> GELU`` on ``[B, C, H, W]``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = F.gelu(self.pwconv1(self.norm(y)))
        return x + y.permute(0, 3, 1, 2)


class MLPBlock(nn.Module):
    """Residual pre-norm MLP (x4 hidden, GELU) on ``[..., C]``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm_in = nn.LayerNorm(dim)
        self.layers = nn.Sequential(nn.Linear(dim, dim * 4), nn.GELU(), nn.Linear(dim * 4, dim))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.layers(self.norm_in(x))


class SegmentationHead(nn.Module):
    """Mask logits for decoder queries (`layer_features`, then `masks_from`).

    Args:
        dim: decoder width.
        num_blocks: depthwise blocks, one per decoder layer.
        downsample_ratio: masks are predicted at ``input / downsample_ratio``.
    """

    def __init__(self, dim: int, num_blocks: int, downsample_ratio: int = 4) -> None:
        super().__init__()
        self.downsample_ratio = downsample_ratio
        self.blocks = nn.ModuleList(DepthwiseConvBlock(dim) for _ in range(num_blocks))
        self.spatial_features_proj = nn.Conv2d(dim, dim, kernel_size=1)
        self.query_features_block = MLPBlock(dim)
        self.query_features_proj = nn.Linear(dim, dim)
        self.bias = nn.Parameter(torch.zeros(1))

    def _kernels(self, queries: Tensor) -> Tensor:
        return self.query_features_proj(self.query_features_block(queries))

    def layer_features(
        self, spatial: Tensor, queries: Tensor, image_size: tuple[int, int], skip_blocks: bool
    ) -> list[tuple[Tensor, Tensor]]:
        """Pixel maps and query kernels per decoder layer, without forming the masks.

        Args:
            spatial: ``[B, C, h, w]`` projector output (first level).
            queries: ``[L, B, Q, C]`` outputs of the last ``L`` decoder layers (the pixel map
                still passes every block), or with ``skip_blocks`` the encoder queries.
            image_size: input ``(H, W)`` in pixels.

        Returns:
            ``L`` pairs ``(pixels [B, C, H/r, W/r], kernels [B, Q, C])``; the mask logits are
            ``einsum("bchw,bqc->bqhw", pixels, kernels) + bias``.
        """
        size = (image_size[0] // self.downsample_ratio, image_size[1] // self.downsample_ratio)
        spatial = F.interpolate(spatial, size=size, mode="bilinear", align_corners=False)
        if skip_blocks:
            return [(self.spatial_features_proj(spatial), self._kernels(queries[-1]))]
        pairs = []
        first_used = len(self.blocks) - queries.shape[0]
        for index, block in enumerate(self.blocks):
            spatial = block(spatial)
            if index >= first_used:
                layer_queries = queries[index - first_used]
                pairs.append((self.spatial_features_proj(spatial), self._kernels(layer_queries)))
        return pairs

    def masks_from(self, pixels: Tensor, kernels: Tensor) -> Tensor:
        """``[B, C, H, W]`` x ``[B, Q, C]`` -> ``[B, Q, H, W]`` logits."""
        batch, queries, _ = kernels.shape
        height, width = pixels.shape[-2:]
        logits = torch.bmm(kernels, pixels.flatten(2)).view(batch, queries, height, width)
        return logits + self.bias
