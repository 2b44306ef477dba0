"""The backbone as an inference graph: windowed ViT and projector with static shapes.

The eager modules (`rfdetr.models.vit`, `rfdetr.models.projector`) are written for training:
3-D token tensors, separate Q/K/V projections, LayerScale as its own multiply, a patch conv and
NCHW maps that go back and forth through permutes for every channel LayerNorm. Traced as they
are, they give an ONNX graph full of shape arithmetic and small ops. This module computes the same
function for one fixed input size, in the form ONNX Runtime runs fastest:

- tokens stay 2-D (``[rows, C]``), so every Linear exports as a single ``Gemm`` with its bias;
- the attention scale is folded into the Q projection, so attention is two MatMuls and a
  Softmax (ONNX Runtime folds the transpose of K into the first);
- LayerScale is folded into the preceding Linear's weight and bias;
- patchify is a reshape/transpose straight into window order plus a ``Gemm``, and the
  interpolated position embedding (with the patch bias) is a constant in that order;
- the projector's 1x1 convolutions are ``Gemm`` on pixel rows, whose channel LayerNorm then
  needs no transpose.

Every folding is exact up to float rounding; `rfdetr.export.onnx.verify_onnx` checks each
exported file against the eager model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rfdetr.models.backbone import WindowedViT
from rfdetr.models.projector import C2f, ConvX, MultiScaleProjector


def layer_norm_rows(x: Tensor, norm: nn.Module) -> Tensor:
    """LayerNorm over the last axis with the parameters of ``norm`` (LayerNorm or LayerNorm2d).

    The normalised width comes from module attributes (Python ints): a size read from a tensor
    while tracing would become a runtime shape computation in the graph.
    """
    shape = tuple(getattr(norm, "normalized_shape", None) or (norm.channels,))
    return F.layer_norm(x, shape, norm.weight, norm.bias, norm.eps)


class _FoldedBlock(nn.Module):
    """The weights of one ViT block, folded for inference (buffers; no training state)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        attention = block.attention
        qkv = attention.attention
        width = qkv.query.weight.shape[0]
        scale = 1.0 / math.sqrt(width // attention.num_heads)
        lambda1 = block.layer_scale1.lambda1.detach()
        lambda2 = block.layer_scale2.lambda1.detach()
        dense, fc2 = attention.output.dense, block.mlp.fc2
        folded = {
            "q_weight": qkv.query.weight * scale,
            "q_bias": qkv.query.bias * scale,
            "dense_weight": dense.weight * lambda1[:, None],
            "dense_bias": dense.bias * lambda1,
            "fc2_weight": fc2.weight * lambda2[:, None],
            "fc2_bias": fc2.bias * lambda2,
        }
        for name, value in folded.items():
            self.register_buffer(name, value.detach().clone())
        self.key, self.value = qkv.key, qkv.value
        self.norm1, self.norm2, self.fc1 = block.norm1, block.norm2, block.mlp.fc1
        self.num_heads = attention.num_heads
        self.width = width

    def forward(self, x: Tensor, tokens: int) -> Tensor:
        """``x``: ``[N * tokens, C]`` rows; attention runs within each group of ``tokens`` rows."""
        heads, width = self.num_heads, self.width
        head_dim = width // heads
        normed = layer_norm_rows(x, self.norm1)
        # Three Gemms rather than one fused QKV: slicing the fused output costs a full copy.
        q = F.linear(normed, self.q_weight, self.q_bias)
        q = q.reshape(-1, tokens, heads, head_dim).permute(0, 2, 1, 3)
        k = self.key(normed).reshape(-1, tokens, heads, head_dim).permute(0, 2, 1, 3)
        v = self.value(normed).reshape(-1, tokens, heads, head_dim).permute(0, 2, 1, 3)
        # q @ k^T with the transpose left to ONNX Runtime, which folds it into the MatMul.
        attended = torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v
        attended = attended.permute(0, 2, 1, 3).reshape(-1, width)
        x = x + F.linear(attended, self.dense_weight, self.dense_bias)
        hidden = F.gelu(self.fc1(layer_norm_rows(x, self.norm2)))
        return x + F.linear(hidden, self.fc2_weight, self.fc2_bias)


class ExportViT(nn.Module):
    """`WindowedViT` for a fixed ``(height, width)``, returning the tapped stages as token rows.

    Args:
        vit: the eager encoder (weights are read, never modified).
        shape: input ``(height, width)`` in pixels, multiples of ``patch_size * num_windows``.
    """

    def __init__(self, vit: WindowedViT, shape: tuple[int, int]) -> None:
        super().__init__()
        patch, windows = vit.patch_size, vit.num_windows
        grid_h, grid_w = shape[0] // patch, shape[1] // patch
        self.patch, self.windows = patch, windows
        self.window_h, self.window_w = grid_h // windows, grid_w // windows
        self.tokens = self.window_h * self.window_w  # patch tokens per window
        embeddings = vit.embeddings
        projection = embeddings.patch_embeddings.projection
        width = projection.weight.shape[0]
        with torch.no_grad():
            # The cached, interpolated table (autograd off): a constant of the graph.
            table = embeddings.position_embedding(grid_h, grid_w).detach().float()
            patches = table[0, 1:].reshape(windows, self.window_h, windows, self.window_w, width)
            patches = patches.permute(0, 2, 1, 3, 4).reshape(windows**2, self.tokens, width)
            self.register_buffer("patch_weight", projection.weight.reshape(width, -1).clone())
            self.register_buffer("patch_offset", (patches + projection.bias).contiguous())
            self.register_buffer("cls_row", (embeddings.cls_token + table[:, :1]).clone())
        last = vit.out_feature_indexes[-1]
        self.blocks = nn.ModuleList(_FoldedBlock(block) for block in vit.encoder.layer[:last])
        self.global_blocks = [i not in vit.window_block_indexes for i in range(last)]
        self.taps = set(vit.out_feature_indexes)
        self.layernorm = vit.layernorm
        self.width = width

    def forward(self, pixels: Tensor) -> list[Tensor]:
        """``[B, 3, H, W]`` -> per tapped stage, ``[B * nw^2 * (1 + T), C]`` normalised rows.

        Rows are ordered image, window (row-major), then CLS followed by the window's ``T``
        patch tokens (row-major), exactly the eager model's windowed token order.
        """
        nw, patch, width = self.windows, self.patch, self.width
        rows = pixels.reshape(-1, 3, nw, self.window_h, patch, nw, self.window_w, patch)
        rows = rows.permute(0, 2, 5, 3, 6, 1, 4, 7).reshape(-1, 3 * patch * patch)
        tokens = F.linear(rows, self.patch_weight).reshape(-1, nw * nw, self.tokens, width)
        tokens = (tokens + self.patch_offset).reshape(-1, self.tokens, width)
        cls = self.cls_row.expand(tokens.shape[0], 1, width)
        x = torch.cat([cls, tokens], dim=1).reshape(-1, width)
        per_window = self.tokens + 1
        features = []
        for index, block in enumerate(self.blocks):
            global_attention = self.global_blocks[index] and nw > 1
            x = block(x, per_window * nw * nw if global_attention else per_window)
            if index + 1 in self.taps:
                features.append(layer_norm_rows(x, self.layernorm))
        return features


def _convx_rows(convx: ConvX, rows: Tensor) -> Tensor:
    """A 1x1 `ConvX` on pixel rows ``[M, C_in]`` -> ``[M, C_out]`` (Gemm, LayerNorm, act)."""
    conv = convx.conv
    out = F.linear(rows, conv.weight.reshape(conv.out_channels, conv.in_channels))
    return convx.act(layer_norm_rows(out, convx.bn))


def _convx_map(convx: ConvX, rows: Tensor, grid: tuple[int, int]) -> Tensor:
    """A 3x3 `ConvX` on pixel rows (NHWC order) -> pixel rows; the conv itself runs NCHW."""
    conv = convx.conv
    nchw = rows.reshape(-1, grid[0], grid[1], conv.in_channels).permute(0, 3, 1, 2)
    out = conv(nchw).permute(0, 2, 3, 1).reshape(-1, conv.out_channels)
    return convx.act(layer_norm_rows(out, convx.bn))


class ExportProjector(nn.Module):
    """`MultiScaleProjector` on the token rows of `ExportViT`, for a fixed input size.

    The single-level P4 projector (every current size) runs on pixel rows; other level sets
    fall back to the eager projector on NCHW maps.

    Args:
        projector: the eager projector.
        vit: the export encoder whose outputs it consumes.
        levels: the projector's levels (``ModelConfig.projector_scale``).
        grid: patch grid ``(H / p, W / p)``.
    """

    def __init__(
        self,
        projector: MultiScaleProjector,
        vit: ExportViT,
        levels: list[str],
        grid: tuple[int, int],
    ) -> None:
        super().__init__()
        self.projector = projector
        self.fast = list(levels) == ["P4"]
        self.grid = grid
        self.level_shapes = [_level_shape(level, grid) for level in levels]
        self.windows, self.window_h, self.window_w = vit.windows, vit.window_h, vit.window_w
        self.width = vit.width
        self.hidden_dim = projector.stages[0][1].channels

    def _unwindow(self, rows: Tensor, channels: int) -> Tensor:
        """``[B * nw^2 * (1 + T), C]`` -> ``[B * H/p * W/p, C]`` row-major pixel rows."""
        nw = self.windows
        tokens = rows.reshape(-1, self.window_h * self.window_w + 1, channels)[:, 1:]
        tokens = tokens.reshape(-1, nw, nw, self.window_h, self.window_w, channels)
        return tokens.permute(0, 1, 3, 2, 4, 5).reshape(-1, channels)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        """Tapped token rows -> one ``[B * h_l * w_l, hidden_dim]`` row-major map per level."""
        if not self.fast:
            maps = [
                self._unwindow(f, self.width)
                .reshape(-1, *self.grid, self.width)
                .permute(0, 3, 1, 2)
                for f in features
            ]
            return [
                m.flatten(2).transpose(1, 2).reshape(-1, self.hidden_dim)
                for m in self.projector(maps)
            ]
        c2f: C2f = self.projector.stages[0][0]
        # cv1 is per pixel, so it runs on the windowed rows (CLS rows included, then dropped).
        rows = torch.cat(features, dim=1) if len(features) > 1 else features[0]
        rows = self._unwindow(_convx_rows(c2f.cv1, rows), 2 * c2f.hidden)
        parts = list(rows.split((c2f.hidden, c2f.hidden), dim=1))
        for bottleneck in c2f.m:
            inner = _convx_map(bottleneck.cv1, parts[-1], self.grid)
            out = _convx_map(bottleneck.cv2, inner, self.grid)
            parts.append(parts[-1] + out if bottleneck.shortcut else out)
        fused = _convx_rows(c2f.cv2, torch.cat(parts, dim=1))
        return [layer_norm_rows(fused, self.projector.stages[0][1])]


def _level_shape(level: str, grid: tuple[int, int]) -> tuple[int, int]:
    """Map size of a projector level for a patch grid (P3: x2 transposed conv, P5: stride 2)."""
    if level == "P3":
        return grid[0] * 2, grid[1] * 2
    if level == "P5":
        return (grid[0] - 1) // 2 + 1, (grid[1] - 1) // 2 + 1
    return grid
