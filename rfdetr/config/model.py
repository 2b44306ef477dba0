"""`ModelConfig` (the architecture of one model), `StrictModel` (the base of every section,
rejecting unknown keys) and `ConfigError`. Only the `build_*` functions of `rfdetr.models` read a
`ModelConfig`; every default is written once, here or in a preset."""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rfdetr.errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration cannot be used; the message is one line naming the field."""


ProjectorLevel = Literal["P3", "P4", "P5"]

# Upper bounds: far above every preset, below what fails only later on a GPU node (a value
# past them is a typo or an attack, and the error names the field at once).
MAX_RESOLUTION = 4096
MAX_CLASSES = 20_000  # LVIS has 1,203; COCO evaluation of 200,000 classes crashes


class EncoderSpec(BaseModel):
    """Width, depth and head count of a windowed ViT encoder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int
    depth: int
    num_heads: int
    mlp_ratio: int = 4


# Upstream's encoder names map to DINOv2 sizes; `vit_windowed_toy` is ours, for CPU tests only.
ENCODER_SPECS: dict[str, EncoderSpec] = {
    "dinov2_windowed_small": EncoderSpec(width=384, depth=12, num_heads=6),
    "dinov2_windowed_base": EncoderSpec(width=768, depth=12, num_heads=12),
    "vit_windowed_toy": EncoderSpec(width=48, depth=4, num_heads=3),
}


class StrictModel(BaseModel):
    """Base for every config section: unknown keys fail with the closest valid name."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False
    )

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        known = cls.model_fields
        unknown = [key for key in data if key not in known] if isinstance(data, dict) else []
        if unknown:
            close = difflib.get_close_matches(str(unknown[0]), sorted(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"unknown {cls.__name__} option '{unknown[0]}'{hint}")
        return data


_RUNTIME = {"runtime": True}  # marks a field of `RUNTIME_MODEL_FIELDS`


class ModelConfig(StrictModel):
    """Architecture of one RF-DETR model. Field names follow upstream's `ModelConfig`.

    Attributes:
        name: preset name this config came from (e.g. ``"nano"``), used for default weights.
        encoder: windowed ViT backbone, a key of `ENCODER_SPECS`.
        out_feature_indexes: encoder stages tapped for the projector (stage k = output of
            block k-1); blocks not listed here and below the last tap use windowed attention.
        num_windows: windows per side; the input side must be divisible by
            ``patch_size * num_windows`` (pixels).
        positional_encoding_size: side of the learned position-embedding grid stored in the
            weights; it is interpolated to the runtime grid.
        resolution: default square input side in pixels.
        num_queries: detection slots per query group; `num_select`: detections kept by
            post-processing (top-k over queries x classes).
        group_detr: query groups used in training (Group DETR); inference uses group 0.
        num_classes: number of foreground classes; the head has ``num_classes + 1`` outputs.

    The fields marked runtime (:data:`RUNTIME_MODEL_FIELDS`) do not fix the weights' shapes.
    """

    name: str = "custom"
    encoder: str = "dinov2_windowed_small"
    out_feature_indexes: list[int] = Field(default_factory=lambda: [3, 6, 9, 12])
    patch_size: int = Field(16, ge=1, le=64)
    num_windows: int = Field(2, ge=1, le=64)
    positional_encoding_size: int = Field(24, ge=1, le=1024)
    resolution: int = Field(384, ge=1, le=MAX_RESOLUTION, json_schema_extra=_RUNTIME)
    projector_scale: list[ProjectorLevel] = Field(default_factory=lambda: ["P4"])
    layer_norm: bool = True
    hidden_dim: int = Field(256, ge=1, le=4096)
    dim_feedforward: int = Field(2048, ge=1, le=16384)
    sa_nheads: int = Field(8, ge=1, le=128)
    ca_nheads: int = Field(16, ge=1, le=128)
    dec_n_points: int = Field(2, ge=1, le=64)
    dec_layers: int = Field(2, ge=1, le=64)
    num_queries: int = Field(300, ge=1, le=10_000)
    num_select: int = Field(300, ge=1, le=10_000, json_schema_extra=_RUNTIME)
    group_detr: int = Field(13, ge=1, le=64)
    two_stage: bool = True
    bbox_reparam: bool = True
    lite_refpoint_refine: bool = True
    segmentation_head: bool = False
    mask_downsample_ratio: int = Field(4, ge=1, le=64)
    num_classes: int = Field(90, ge=1, le=MAX_CLASSES)
    drop_path: float = Field(0.0, ge=0.0, lt=1.0, json_schema_extra=_RUNTIME)
    gradient_checkpointing: bool = Field(False, json_schema_extra=_RUNTIME)

    @model_validator(mode="after")
    def _check_consistency(self) -> ModelConfig:
        if self.encoder not in ENCODER_SPECS:
            raise ValueError(
                f"encoder '{self.encoder}' is unknown; choose one of {sorted(ENCODER_SPECS)}"
            )
        spec = self.encoder_spec
        if self.out_feature_indexes != sorted(set(self.out_feature_indexes)):
            raise ValueError("out_feature_indexes must be strictly increasing")
        if self.out_feature_indexes[0] < 1 or self.out_feature_indexes[-1] > spec.depth:
            raise ValueError(f"out_feature_indexes must lie in [1, {spec.depth}]")
        if self.resolution % self.block_size:
            raise ValueError(
                f"resolution {self.resolution} must be divisible by patch_size * num_windows "
                f"= {self.block_size}"
            )
        if self.projector_scale != sorted(set(self.projector_scale)):
            raise ValueError("projector_scale must be ascending and unique, e.g. ['P3', 'P5']")
        if self.hidden_dim % self.sa_nheads or self.hidden_dim % self.ca_nheads:
            raise ValueError("hidden_dim must be divisible by sa_nheads and ca_nheads")
        if not self.two_stage or not self.bbox_reparam or not self.lite_refpoint_refine:
            raise ValueError(
                "two_stage, bbox_reparam and lite_refpoint_refine must stay True: every RF-DETR "
                "size uses them and no other variant is implemented"
            )
        return self

    @property
    def encoder_spec(self) -> EncoderSpec:
        """Width, depth and heads of the backbone."""
        return ENCODER_SPECS[self.encoder]

    @property
    def block_size(self) -> int:
        """Input sides must be multiples of this many pixels."""
        return self.patch_size * self.num_windows

    @property
    def window_block_indexes(self) -> list[int]:
        """0-based encoder blocks that attend within windows (the others attend globally).

        Upstream derives them as every block index up to the last tap that is not itself a tap
        index, treating the stage numbers as block numbers; released weights depend on it.
        """
        taps = set(self.out_feature_indexes)
        return [i for i in range(self.out_feature_indexes[-1] + 1) if i not in taps]

    def with_overrides(self, **overrides: Any) -> ModelConfig:
        """Return a validated copy with ``overrides`` applied (unknown keys fail)."""
        return ModelConfig.model_validate({**self.model_dump(), **overrides})


# Fields that do not fix the weights' shapes: `model.train()` and a resume may change them.
RUNTIME_MODEL_FIELDS: frozenset[str] = frozenset(
    name for name, field in ModelConfig.model_fields.items() if field.json_schema_extra == _RUNTIME
)
