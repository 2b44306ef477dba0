"""Registry of RF-DETR model sizes.

Each preset is a function returning a `ModelConfig` with upstream's published values
(resolution, patch size, windows, position-embedding grid, decoder depth, queries, `num_select`).
`tiny` and `tiny-seg` are CPU-sized models for tests and CI; they have no public class.
"""

from __future__ import annotations

from collections.abc import Callable

from rfdetr.config import ConfigError, ModelConfig

_PRESETS: dict[str, Callable[[], ModelConfig]] = {}


def register_preset(name: str) -> Callable[[Callable[[], ModelConfig]], Callable[[], ModelConfig]]:
    """Register a function returning the `ModelConfig` of size ``name``."""

    def decorator(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
        if name in _PRESETS:
            raise ValueError(f"preset '{name}' is registered twice")
        _PRESETS[name] = fn
        return fn

    return decorator


def list_presets() -> list[str]:
    """Names of every registered preset, in registration order."""
    return list(_PRESETS)


def get_preset(name: str) -> ModelConfig:
    """The `ModelConfig` of preset ``name``; a clear error lists the valid names."""
    try:
        return _PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown model size '{name}'; choose one of {list_presets()}") from None


def _detection(name: str, **fields: object) -> ModelConfig:
    return ModelConfig.model_validate({"name": name, **fields})


def _segmentation(name: str, resolution: int, **fields: object) -> ModelConfig:
    # Every Seg size uses patch 12 and a position grid of resolution / 12.
    return ModelConfig.model_validate(
        {
            "name": name,
            "segmentation_head": True,
            "patch_size": 12,
            "resolution": resolution,
            "positional_encoding_size": resolution // 12,
            **fields,
        }
    )


@register_preset("nano")
def nano() -> ModelConfig:
    return _detection("nano", resolution=384, positional_encoding_size=24, dec_layers=2)


@register_preset("small")
def small() -> ModelConfig:
    return _detection("small", resolution=512, positional_encoding_size=32, dec_layers=3)


@register_preset("medium")
def medium() -> ModelConfig:
    return _detection("medium", resolution=576, positional_encoding_size=36, dec_layers=4)


@register_preset("large")
def large() -> ModelConfig:
    return _detection("large", resolution=704, positional_encoding_size=44, dec_layers=4)


@register_preset("base")
def base() -> ModelConfig:
    # Base keeps DINOv2's native 37x37 grid (518 / 14) at resolution 560.
    return _detection(
        "base",
        patch_size=14,
        num_windows=4,
        out_feature_indexes=[2, 5, 8, 11],
        resolution=560,
        positional_encoding_size=37,
        dec_layers=3,
    )


@register_preset("seg-nano")
def seg_nano() -> ModelConfig:
    return _segmentation(
        "seg-nano", 312, num_windows=1, dec_layers=4, num_queries=100, num_select=100
    )


@register_preset("seg-small")
def seg_small() -> ModelConfig:
    return _segmentation("seg-small", 384, dec_layers=4, num_queries=100, num_select=100)


@register_preset("seg-medium")
def seg_medium() -> ModelConfig:
    return _segmentation("seg-medium", 432, dec_layers=5, num_queries=200, num_select=200)


@register_preset("seg-large")
def seg_large() -> ModelConfig:
    return _segmentation("seg-large", 504, dec_layers=5, num_queries=200, num_select=200)


@register_preset("seg-xlarge")
def seg_xlarge() -> ModelConfig:
    return _segmentation("seg-xlarge", 624, dec_layers=6)


@register_preset("seg-2xlarge")
def seg_2xlarge() -> ModelConfig:
    return _segmentation("seg-2xlarge", 768, dec_layers=6)


_TINY = {
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


@register_preset("tiny")
def tiny() -> ModelConfig:
    """A few-hundred-thousand-parameter detector that trains on two CPU cores in seconds."""
    return _detection("tiny", **_TINY)


@register_preset("tiny-seg")
def tiny_seg() -> ModelConfig:
    """The `tiny` detector with the segmentation head."""
    return _detection("tiny-seg", segmentation_head=True, **_TINY)


def toy_version(config: ModelConfig, resolution_blocks: int = 4) -> ModelConfig:
    """Shrink any preset to toy width and depth, keeping its patch size, windows and head type.

    Args:
        config: a full-size preset.
        resolution_blocks: input side in units of ``patch_size * num_windows``.
    """
    resolution = config.block_size * resolution_blocks
    toy = {key: value for key, value in _TINY.items() if key not in ("patch_size", "num_windows")}
    toy.update(resolution=resolution, positional_encoding_size=resolution // config.patch_size)
    return config.with_overrides(**toy)
