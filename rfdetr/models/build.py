"""Builders: the only code that turns a `ModelConfig` into modules."""

from __future__ import annotations

from rfdetr.config import ModelConfig
from rfdetr.models.backbone import Backbone, WindowedViT
from rfdetr.models.decoder import Decoder, DecoderLayer
from rfdetr.models.detector import RFDETR
from rfdetr.models.projector import MultiScaleProjector
from rfdetr.models.segmentation_head import SegmentationHead
from rfdetr.models.transformer import Transformer


def build_backbone(cfg: ModelConfig) -> Backbone:
    """Windowed ViT encoder + multi-scale projector for ``cfg``."""
    spec = cfg.encoder_spec
    vit = WindowedViT(
        width=spec.width,
        depth=spec.depth,
        num_heads=spec.num_heads,
        mlp_ratio=spec.mlp_ratio,
        patch_size=cfg.patch_size,
        pe_size=cfg.positional_encoding_size,
        num_windows=cfg.num_windows,
        window_block_indexes=cfg.window_block_indexes,
        out_feature_indexes=cfg.out_feature_indexes,
        drop_path_rate=cfg.drop_path,
        gradient_checkpointing=cfg.gradient_checkpointing,
    )
    projector = MultiScaleProjector(
        in_channels=[spec.width] * len(cfg.out_feature_indexes),
        out_channels=cfg.hidden_dim,
        levels=list(cfg.projector_scale),
        layer_norm=cfg.layer_norm,
    )
    return Backbone(vit, projector)


def build_transformer(cfg: ModelConfig) -> Transformer:
    """Two-stage selection heads + decoder for ``cfg``."""
    layers = [
        DecoderLayer(
            d_model=cfg.hidden_dim,
            sa_nheads=cfg.sa_nheads,
            ca_nheads=cfg.ca_nheads,
            dim_feedforward=cfg.dim_feedforward,
            n_levels=len(cfg.projector_scale),  # one decoder level per projector output
            n_points=cfg.dec_n_points,
            group_detr=cfg.group_detr,
        )
        for _ in range(cfg.dec_layers)
    ]
    return Transformer(
        Decoder(layers, cfg.hidden_dim),
        d_model=cfg.hidden_dim,
        num_queries=cfg.num_queries,
        group_detr=cfg.group_detr,
        num_classes=cfg.num_classes,
    )


def build_model(cfg: ModelConfig) -> RFDETR:
    """The full `RFDETR` module for ``cfg``, randomly initialised."""
    head = (
        SegmentationHead(cfg.hidden_dim, cfg.dec_layers, cfg.mask_downsample_ratio)
        if cfg.segmentation_head
        else None
    )
    return RFDETR(
        build_backbone(cfg),
        build_transformer(cfg),
        head,
        num_classes=cfg.num_classes,
        num_queries=cfg.num_queries,
        group_detr=cfg.group_detr,
    )
