"""Windowed DINOv2-style vision transformer (no register tokens).

Submodule names follow Hugging Face's DINOv2 layout (``embeddings``, ``encoder.layer.N``,
``attention.attention.query`` ...) because RF-DETR checkpoints store the backbone under those
keys; the code itself is ours.

Windowing: after the position embedding is added, the ``Hp x Wp`` patch grid is cut into
``num_windows x num_windows`` windows that move into the batch dimension, each with its own copy
of the CLS token. Windowed blocks attend within a window; global blocks fold the windows of an
image back into one sequence (all CLS copies included) for their attention only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Embeddings(nn.Module):
    """Patch tokens + CLS token + learned absolute position embedding, then windowing.

    The position embedding is stored for a ``pe_size x pe_size`` grid (plus the CLS entry) and
    bicubically interpolated to the runtime grid. Without autograd (inference, export) the
    interpolated table is cached per grid, invalidated whenever the parameter changes.
    """

    def __init__(self, width: int, patch_size: int, pe_size: int, num_windows: int) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        # Unused in forward; kept because checkpoints carry it (DINOv2's masked-patch token).
        self.mask_token = nn.Parameter(torch.zeros(1, width))
        projection = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)
        self.patch_embeddings = nn.ModuleDict({"projection": projection})
        self.position_embeddings = nn.Parameter(torch.zeros(1, pe_size * pe_size + 1, width))
        self.patch_size = patch_size
        self.pe_size = pe_size
        self.num_windows = num_windows
        self._pe_cache: dict[tuple, Tensor] = {}

    def position_embedding(self, grid_h: int, grid_w: int) -> Tensor:
        """Position table ``[1, 1 + grid_h * grid_w, width]`` for a ``grid_h x grid_w`` grid."""
        table = self.position_embeddings
        if (grid_h, grid_w) == (self.pe_size, self.pe_size):
            return table
        if torch.is_grad_enabled() and table.requires_grad:
            return self._interpolate(grid_h, grid_w)
        key = (grid_h, grid_w, table.device, table.dtype, table._version)
        if key not in self._pe_cache:  # one entry: the latest grid
            self._pe_cache = {key: self._interpolate(grid_h, grid_w).detach()}
        return self._pe_cache[key]

    def _interpolate(self, grid_h: int, grid_w: int) -> Tensor:
        table = self.position_embeddings
        width = table.shape[-1]
        grid = table[:, 1:].reshape(1, self.pe_size, self.pe_size, width).permute(0, 3, 1, 2)
        # fp32 and antialiasing as upstream, so interpolated tables match theirs exactly.
        grid = F.interpolate(
            grid.float(), size=(grid_h, grid_w), mode="bicubic", align_corners=False, antialias=True
        ).to(table.dtype)
        grid = grid.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, width)
        return torch.cat([table[:, :1], grid], dim=1)

    def forward(self, pixels: Tensor) -> Tensor:
        """``[B, 3, H, W]`` -> ``[B * nw^2, 1 + (H/p * W/p) / nw^2, width]``."""
        batch, _, height, width_px = pixels.shape
        # Python ints even while tracing: the cached position table becomes a graph constant.
        grid_h, grid_w = int(height) // self.patch_size, int(width_px) // self.patch_size
        projection = self.patch_embeddings.projection  # row-major patch tokens
        tokens = projection(pixels.to(projection.weight.dtype)).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(batch, -1, -1), tokens], dim=1)
        tokens = tokens + self.position_embedding(grid_h, grid_w)
        nw = self.num_windows
        if nw == 1:
            return tokens
        cls, patches = tokens[:, :1], tokens[:, 1:]
        channels = patches.shape[-1]
        patches = patches.reshape(batch, nw, grid_h // nw, nw, grid_w // nw, channels)
        patches = patches.permute(0, 1, 3, 2, 4, 5)
        patches = patches.reshape(batch * nw * nw, (grid_h // nw) * (grid_w // nw), channels)
        cls = cls.repeat_interleave(nw * nw, dim=0)
        return torch.cat([cls, patches], dim=1)


class SelfAttention(nn.Module):
    """Multi-head self-attention over ``[N, T, width]`` with scaled dot-product attention."""

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        qkv = {name: nn.Linear(width, width) for name in ("query", "key", "value")}
        self.attention = nn.ModuleDict(qkv)
        self.output = nn.ModuleDict({"dense": nn.Linear(width, width)})
        self.scale: float | None = None  # None: 1 / sqrt(head dim); 1 once folded (`deploy`)

    def forward(self, x: Tensor) -> Tensor:
        n, t, c = x.shape
        heads = self.num_heads
        rows = x.reshape(-1, c)  # 2-D rows: each Linear exports as one Gemm with its bias

        def split(proj: nn.Linear) -> Tensor:
            return proj(rows).view(n, t, heads, c // heads).transpose(1, 2)

        qkv = self.attention
        out = F.scaled_dot_product_attention(
            split(qkv.query), split(qkv.key), split(qkv.value), scale=self.scale
        )
        return self.output.dense(out.transpose(1, 2).reshape(n * t, c)).view_as(x)


class LayerScale(nn.Module):
    def __init__(self, width: int, init: float = 1.0) -> None:
        super().__init__()
        self.lambda1 = nn.Parameter(torch.full((width,), init))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.lambda1


class FeedForward(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, x.shape[-1])  # 2-D, as in `SelfAttention`
        return self.fc2(F.gelu(self.fc1(rows))).view_as(x)


def drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability ``rate``."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


class ViTBlock(nn.Module):
    """Pre-norm transformer block with LayerScale; windowed or global attention."""

    def __init__(
        self, width: int, num_heads: int, mlp_ratio: int, num_windows: int, drop_path_rate: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attention = SelfAttention(width, num_heads)
        self.layer_scale1 = LayerScale(width)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = FeedForward(width, width * mlp_ratio)
        self.layer_scale2 = LayerScale(width)
        self.num_windows = num_windows
        self.drop_path_rate = drop_path_rate

    @torch.no_grad()
    def deploy(self) -> None:
        """Fold for inference export, in place and for good (call it on a copy): both
        LayerScales into the Linear before them, the attention scale into the query projection.
        """
        for scale, linear in (
            (self.layer_scale1, self.attention.output.dense),
            (self.layer_scale2, self.mlp.fc2),
        ):
            linear.weight.mul_(scale.lambda1[:, None])
            linear.bias.mul_(scale.lambda1)
        self.layer_scale1, self.layer_scale2 = nn.Identity(), nn.Identity()
        query = self.attention.attention.query
        factor = (query.out_features // self.attention.num_heads) ** -0.5
        query.weight.mul_(factor)
        query.bias.mul_(factor)
        self.attention.scale = 1.0

    def forward(self, x: Tensor, global_attention: bool) -> Tensor:
        """``x``: ``[B * nw^2, T, width]``; global blocks attend across the windows of an image."""
        attn_in = self.norm1(x)
        if global_attention and self.num_windows > 1:
            windows = self.num_windows**2
            n, t, c = attn_in.shape
            attn = self.attention(attn_in.reshape(n // windows, windows * t, c)).reshape(n, t, c)
        else:
            attn = self.attention(attn_in)
        x = x + drop_path(self.layer_scale1(attn), self.drop_path_rate, self.training)
        mlp = self.layer_scale2(self.mlp(self.norm2(x)))
        return x + drop_path(mlp, self.drop_path_rate, self.training)
