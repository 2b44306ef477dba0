"""RF-DETR model sizes: the `ModelConfig` fields each changes, with upstream's published values.
`tiny` and `tiny-seg` are CPU-sized models for tests and CI, without a public class."""

from __future__ import annotations

from typing import Any

from rfdetr.config.model import ConfigError, ModelConfig


def _segmentation(resolution: int, **fields: Any) -> dict[str, Any]:
    # Every Seg size uses patch 12 and a position grid of resolution / 12.
    return {
        "segmentation_head": True,
        "patch_size": 12,
        "resolution": resolution,
        "positional_encoding_size": resolution // 12,
        **fields,
    }


_TINY: dict[str, Any] = {
    "encoder": "vit_windowed_toy",
    "out_feature_indexes": [2, 4],
    "patch_size": 8,
    "num_windows": 2,
    "resolution": 64,
    "positional_encoding_size": 8,
    "hidden_dim": 32,
    "dim_feedforward": 64,
    "sa_nheads": 4,
    "ca_nheads": 4,
    "dec_layers": 2,
    "num_queries": 10,
    "num_select": 10,
    "group_detr": 2,
    "num_classes": 3,
}

_PRESETS: dict[str, dict[str, Any]] = {
    "nano": {"resolution": 384, "positional_encoding_size": 24, "dec_layers": 2},
    "small": {"resolution": 512, "positional_encoding_size": 32, "dec_layers": 3},
    "medium": {"resolution": 576, "positional_encoding_size": 36, "dec_layers": 4},
    "large": {"resolution": 704, "positional_encoding_size": 44, "dec_layers": 4},
    # Base keeps DINOv2's native 37x37 grid (518 / 14) at resolution 560.
    "base": {
        "patch_size": 14,
        "num_windows": 4,
        "out_feature_indexes": [2, 5, 8, 11],
        "resolution": 560,
        "positional_encoding_size": 37,
        "dec_layers": 3,
    },
    "seg-nano": _segmentation(312, num_windows=1, dec_layers=4, num_queries=100, num_select=100),
    "seg-small": _segmentation(384, dec_layers=4, num_queries=100, num_select=100),
    "seg-medium": _segmentation(432, dec_layers=5, num_queries=200, num_select=200),
    "seg-large": _segmentation(504, dec_layers=5, num_queries=200, num_select=200),
    "seg-xlarge": _segmentation(624, dec_layers=6),
    "seg-2xlarge": _segmentation(768, dec_layers=6),
    "tiny": _TINY,
    "tiny-seg": {**_TINY, "segmentation_head": True},
}


def list_presets() -> list[str]:
    """Names of every preset, in registration order."""
    return list(_PRESETS)


def get_preset(name: str) -> ModelConfig:
    """The `ModelConfig` of preset ``name``; a clear error lists the valid names."""
    try:
        fields = _PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model size '{name}'; choose one of {list_presets()}") from None
    return ModelConfig.model_validate({"name": name, **fields})


def toy_version(config: ModelConfig) -> ModelConfig:
    """Shrink a full-size preset to toy width and depth, keeping its patch size, windows and
    head type; the input side is 4 blocks of ``patch_size * num_windows``."""
    resolution = config.block_size * 4
    toy = {key: value for key, value in _TINY.items() if key not in ("patch_size", "num_windows")}
    toy.update(resolution=resolution, positional_encoding_size=resolution // config.patch_size)
    return config.with_overrides(**toy)
