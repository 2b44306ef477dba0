"""Multi-scale projector: fuses the tapped ViT maps with a C2f block per output level.

Every current RF-DETR size uses the single level P4 (the patch stride): the tapped maps are
concatenated along channels and fused by a ``C2f`` block followed by a channel LayerNorm. P3
(2x up-sampling) and P5 (2x down-sampling) exist for the deprecated large model.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from rfdetr.models.layers import LayerNorm2d

# Output stride of a level relative to the patch stride.
LEVEL_SCALE = {"P3": 2.0, "P4": 1.0, "P5": 0.5}
BOTTLENECKS = 3  # per C2f, in every RF-DETR size


class ConvX(nn.Module):
    """Conv (no bias) -> channel LayerNorm (or BatchNorm) -> activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int = 3,
        stride: int = 1,
        act: str = "relu",
        layer_norm: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel, stride, padding=kernel // 2, bias=False
        )
        self.bn = LayerNorm2d(out_channels) if layer_norm else nn.BatchNorm2d(out_channels)
        self.act = nn.SiLU() if act == "silu" else nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class C2f(nn.Module):
    """CSP block with `BOTTLENECKS` bottlenecks (two 3x3 ConvX ``cv1``, ``cv2``; RF-DETR never
    uses their shortcut) whose intermediate outputs are all concatenated.

    ``[B, in, H, W]`` -> ``[B, out, H, W]``; hidden width is ``out / 2``.
    """

    def __init__(self, in_channels: int, out_channels: int, layer_norm: bool) -> None:
        super().__init__()
        n = BOTTLENECKS
        self.hidden = out_channels // 2
        self.cv1 = ConvX(in_channels, 2 * self.hidden, 1, act="silu", layer_norm=layer_norm)
        self.cv2 = ConvX((2 + n) * self.hidden, out_channels, 1, act="silu", layer_norm=layer_norm)

        def conv() -> ConvX:
            return ConvX(self.hidden, self.hidden, 3, act="silu", layer_norm=layer_norm)

        self.m = nn.ModuleList(nn.Sequential(OrderedDict(cv1=conv(), cv2=conv())) for _ in range(n))

    def forward(self, x: Tensor) -> Tensor:
        parts = list(self.cv1(x).split((self.hidden, self.hidden), dim=1))
        for bottleneck in self.m:
            parts.append(bottleneck(parts[-1]))
        return self.cv2(torch.cat(parts, dim=1))


def _resampler(channels: int, scale: float, layer_norm: bool) -> nn.Sequential:
    """Bring one tapped map to the stride of a level; identity for P4."""
    if scale == 2.0:
        return nn.Sequential(nn.ConvTranspose2d(channels, channels // 2, kernel_size=2, stride=2))
    if scale == 0.5:
        return nn.Sequential(ConvX(channels, channels, 3, 2, layer_norm=layer_norm))
    return nn.Sequential()


class MultiScaleProjector(nn.Module):
    """Tapped maps ``[B, C_i, Hp, Wp]`` -> one ``[B, out_channels, h_l, w_l]`` map per level.

    Args:
        in_channels: channels of each tapped map.
        out_channels: decoder width.
        levels: output levels, ascending (``["P4"]`` for every current size).
        layer_norm: channel LayerNorm (True in every RF-DETR size) instead of BatchNorm.
    """

    def __init__(
        self,
        in_channels: list[int],
        out_channels: int,
        levels: list[str],
        layer_norm: bool = True,
    ) -> None:
        super().__init__()
        samplers, stages = [], []
        for level in levels:
            scale = LEVEL_SCALE[level]
            samplers.append(nn.ModuleList(_resampler(c, scale, layer_norm) for c in in_channels))
            fused = sum(c // 2 if scale == 2.0 else c for c in in_channels)
            stages.append(
                nn.Sequential(C2f(fused, out_channels, layer_norm), LayerNorm2d(out_channels))
            )
        self.stages_sampling = nn.ModuleList(samplers)
        self.stages = nn.ModuleList(stages)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        outputs = []
        for samplers, stage in zip(self.stages_sampling, self.stages, strict=True):
            resampled = [sampler(f) for sampler, f in zip(samplers, features, strict=True)]
            fused = resampled[0] if len(resampled) == 1 else torch.cat(resampled, dim=1)
            outputs.append(stage(fused))
        return outputs
