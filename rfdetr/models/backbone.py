"""RF-DETR backbone: windowed ViT encoder tapped at several depths, then the C2f projector.

Module nesting (``backbone.0.encoder.encoder.*``, ``backbone.0.projector.*``) mirrors the
state-dict keys of upstream checkpoints, so official weights load without renaming.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from rfdetr.models.projector import MultiScaleProjector
from rfdetr.models.vit import Embeddings, ViTBlock


class WindowedViT(nn.Module):
    """DINOv2-style ViT returning the normalised feature maps of the ``out_feature_indexes``
    stages (stage k = output of block k-1). ``pe_size``: side of the stored position-embedding
    grid; ``num_windows`` windows per side for the (0-based) ``window_block_indexes`` blocks;
    ``gradient_checkpointing`` recomputes blocks in backward to save activation memory.
    """

    def __init__(
        self,
        *,
        width: int,
        depth: int,
        num_heads: int,
        mlp_ratio: int,
        patch_size: int,
        pe_size: int,
        num_windows: int,
        window_block_indexes: list[int],
        out_feature_indexes: list[int],
        drop_path_rate: float = 0.0,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.embeddings = Embeddings(width, patch_size, pe_size, num_windows)
        block = (width, num_heads, mlp_ratio, num_windows, drop_path_rate)
        self.encoder = nn.ModuleDict(
            {"layer": nn.ModuleList(ViTBlock(*block) for _ in range(depth))}
        )
        self.layernorm = nn.LayerNorm(width, eps=1e-6)
        self.patch_size = patch_size
        self.num_windows = num_windows
        self.window_block_indexes = set(window_block_indexes)
        self.out_feature_indexes = list(out_feature_indexes)
        self.gradient_checkpointing = gradient_checkpointing
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Conv2d):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.embeddings.position_embeddings, std=0.02)
        nn.init.trunc_normal_(self.embeddings.cls_token, std=0.02)

    def forward(self, pixels: Tensor) -> list[Tensor]:
        """``[B, 3, H, W]`` -> one ``[B, width, H/p, W/p]`` map per tapped stage (ValueError unless
        H and W are multiples of ``patch_size * num_windows``)."""
        batch, _, height, width_px = pixels.shape
        block = self.patch_size * self.num_windows
        if height % block or width_px % block:
            raise ValueError(
                f"input size {height}x{width_px} must be divisible by patch_size * num_windows "
                f"= {block}"
            )
        grid = (height // self.patch_size, width_px // self.patch_size)
        hidden = self.embeddings(pixels)
        taps = set(self.out_feature_indexes)
        features = [self._to_map(hidden, batch, grid)] if 0 in taps else []
        for index, block in enumerate(self.encoder.layer):
            if index >= self.out_feature_indexes[-1]:
                break  # later blocks feed no tapped stage
            global_attention = index not in self.window_block_indexes
            if self.gradient_checkpointing and self.training:
                hidden = checkpoint(block, hidden, global_attention, use_reentrant=False)
            else:
                hidden = block(hidden, global_attention)
            if index + 1 in taps:
                features.append(self._to_map(hidden, batch, grid))
        return features

    def _to_map(self, hidden: Tensor, batch: int, grid: tuple[int, int]) -> Tensor:
        tokens = self.layernorm(hidden)[:, 1:]
        nw = self.num_windows
        grid_h, grid_w = grid
        channels = tokens.shape[-1]
        tokens = tokens.reshape(batch, nw, nw, grid_h // nw, grid_w // nw, channels)
        tokens = tokens.permute(0, 1, 3, 2, 4, 5).reshape(batch, grid_h, grid_w, channels)
        return tokens.permute(0, 3, 1, 2).contiguous()


class Backbone(nn.Module):
    """Encoder + projector: ``[B, 3, H, W]`` -> list of ``[B, hidden_dim, h_l, w_l]`` maps."""

    def __init__(self, vit: WindowedViT, projector: MultiScaleProjector) -> None:
        super().__init__()
        self.encoder = nn.ModuleDict({"encoder": vit})  # upstream's `encoder.encoder.` keys
        self.projector = projector

    def forward(self, pixels: Tensor) -> list[Tensor]:
        return self.projector(self.encoder.encoder(pixels))
