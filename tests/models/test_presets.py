"""Presets carry upstream's published values, and every size has upstream's parameter count."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from rfdetr.config import ModelConfig, get_preset, list_presets
from rfdetr.models.build import build_model

# Upstream's benchmark table (training-time module, all query groups, 90 classes).
PUBLISHED_PARAMS_MILLIONS = {
    "nano": 30.47,
    "small": 32.11,
    "medium": 33.69,
    "large": 33.93,
    "seg-nano": 33.58,
    "seg-small": 33.71,
    "seg-medium": 35.69,
    "seg-large": 35.87,
    "seg-xlarge": 38.11,
    "seg-2xlarge": 38.65,
}

# (resolution, patch, windows, position grid, decoder layers, queries, num_select)
UPSTREAM_TABLE = {
    "nano": (384, 16, 2, 24, 2, 300, 300),
    "small": (512, 16, 2, 32, 3, 300, 300),
    "medium": (576, 16, 2, 36, 4, 300, 300),
    "large": (704, 16, 2, 44, 4, 300, 300),
    "base": (560, 14, 4, 37, 3, 300, 300),
    "seg-nano": (312, 12, 1, 26, 4, 100, 100),
    "seg-small": (384, 12, 2, 32, 4, 100, 100),
    "seg-medium": (432, 12, 2, 36, 5, 200, 200),
    "seg-large": (504, 12, 2, 42, 5, 200, 200),
    "seg-xlarge": (624, 12, 2, 52, 6, 300, 300),
    "seg-2xlarge": (768, 12, 2, 64, 6, 300, 300),
}


@pytest.mark.parametrize("size", sorted(UPSTREAM_TABLE))
def test_preset_matches_upstream_table(size: str) -> None:
    cfg = get_preset(size)
    got = (
        cfg.resolution,
        cfg.patch_size,
        cfg.num_windows,
        cfg.positional_encoding_size,
        cfg.dec_layers,
        cfg.num_queries,
        cfg.num_select,
    )
    assert got == UPSTREAM_TABLE[size]
    assert cfg.segmentation_head == size.startswith("seg-")
    assert cfg.group_detr == 13 and cfg.num_classes == 90


@pytest.mark.parametrize("size", sorted(PUBLISHED_PARAMS_MILLIONS))
def test_parameter_count_matches_upstream(size: str) -> None:
    with torch.device("meta"):  # counts shapes without allocating 30 M floats per size
        model = build_model(get_preset(size))
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    expected = PUBLISHED_PARAMS_MILLIONS[size]
    assert abs(millions - expected) / expected < 0.005, f"{size}: {millions:.2f} M"


def test_unknown_option_names_the_closest_field() -> None:
    with pytest.raises(ValidationError, match="did you mean 'resolution'"):
        ModelConfig.model_validate({"resolutoin": 384})


def test_resolution_must_fit_patch_and_windows() -> None:
    with pytest.raises(ValidationError, match="divisible by patch_size \\* num_windows = 32"):
        get_preset("nano").with_overrides(resolution=400)


def test_unknown_preset_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="seg-nano"):
        get_preset("huge")


def test_tiny_presets_are_registered_and_small() -> None:
    assert {"tiny", "tiny-seg"} <= set(list_presets())
    params = sum(p.numel() for p in build_model(get_preset("tiny")).parameters())
    assert params < 1_000_000
