"""Our checkpoints carry what upstream rfdetr 1.11.2 reads, as plain data (no upstream needed).

The keys and types come from upstream 1.11.2's own source (the PyPI wheel):
- ``rfdetr/detr.py`` ``RFDETR.from_checkpoint``: refuses a file without ``"args"``; picks the class
  from ``ckpt["model_name"]`` (a ``str``, e.g. ``"RFDETRNano"``); passes every
  ``ckpt["model_config"]`` entry that is a field of that class's ``ModelConfig`` to the constructor.
- ``rfdetr/models/weights.py`` ``load_pretrain_weights`` (what ``RFDETRNano(pretrain_weights=...)``
  runs): class names from ``args["class_names"]`` (a list of ``str``), query slicing from
  ``args["num_queries"]`` / ``args["group_detr"]`` (``int``).
- ``rfdetr/utilities/state_dict.py`` ``validate_checkpoint_compatibility``: ``args["patch_size"]``
  (``int``) and ``args["segmentation_head"]`` (``bool``).
- ``rfdetr/config.py`` ``ModelConfig``: the field types below (``extra="forbid"``).
``benchmarks/upstream_handoff.py`` checks the same files against the real upstream package.
"""

from __future__ import annotations

from pathlib import Path

import torch
from weights_helpers import tiny_detector

from rfdetr.checkpoints import read_checkpoint, save_checkpoint
from rfdetr.checkpoints.formats import upstream_fields
from rfdetr.config import get_preset

# Upstream 1.11.2 ModelConfig field -> Python type of its annotation (rfdetr/config.py).
UPSTREAM_MODEL_CONFIG_TYPES: dict[str, type | tuple[type, ...]] = {
    "encoder": str,
    "out_feature_indexes": list,
    "patch_size": int,
    "num_windows": int,
    "positional_encoding_size": int,
    "resolution": int,
    "projector_scale": list,
    "layer_norm": bool,
    "hidden_dim": int,
    "sa_nheads": int,
    "ca_nheads": int,
    "dec_n_points": int,
    "dec_layers": int,
    "num_queries": int,
    "num_select": int,
    "group_detr": int,
    "two_stage": bool,
    "bbox_reparam": bool,
    "lite_refpoint_refine": bool,
    "segmentation_head": bool,
    "mask_downsample_ratio": int,
    "num_classes": int,
}
UPSTREAM_ARGS_TYPES = {
    "class_names": list,
    "num_classes": int,
    "num_queries": int,
    "group_detr": int,
    "patch_size": int,
    "segmentation_head": bool,
}


def _saved(tmp_path: Path, size: str, class_names: list[str], **overrides: object) -> dict:
    config = get_preset(size).with_overrides(num_classes=len(class_names), **overrides)
    path = save_checkpoint(
        tmp_path / "checkpoint_best_total.pth",
        tiny_detector().state_dict(),
        config={"model": config.model_dump(mode="json"), "seed": 1},
        class_names=class_names,
        epoch=3,
    )
    return torch.load(path, map_location="cpu", weights_only=True)  # no allow-list


def test_checkpoint_carries_upstream_keys_in_upstream_types(tmp_path: Path) -> None:
    raw = _saved(tmp_path, "nano", ["red_box", "blue_box"], resolution=192)
    assert raw["model_name"] == "RFDETRNano"
    args, model_config = raw["args"], raw["model_config"]
    assert isinstance(args, dict) and isinstance(model_config, dict)
    assert args["class_names"] == ["red_box", "blue_box"]
    assert all(isinstance(name, str) for name in args["class_names"])
    for key, kind in UPSTREAM_ARGS_TYPES.items():
        assert type(args[key]) is kind, key  # bool is not int here, and the reverse
    assert set(model_config) == set(UPSTREAM_MODEL_CONFIG_TYPES)
    for key, kind in UPSTREAM_MODEL_CONFIG_TYPES.items():
        assert type(model_config[key]) is kind, key
    assert (model_config["resolution"], model_config["num_classes"]) == (192, 2)
    assert (
        model_config["positional_encoding_size"]
        == raw["config"]["model"]["positional_encoding_size"]
    )
    assert args["segmentation_head"] is False and args["patch_size"] == 16


def test_our_reader_still_sees_our_format(tmp_path: Path) -> None:
    """The upstream keys do not make our reader take the file for an upstream one."""
    _saved(tmp_path, "nano", ["red_box", "blue_box"], resolution=192)
    loaded = read_checkpoint(tmp_path / "checkpoint_best_total.pth")
    assert loaded.format == "rfdetr"
    assert loaded.class_names == ["red_box", "blue_box"]
    assert loaded.config is not None and loaded.config["model"]["resolution"] == 192


def test_upstream_class_names_of_every_upstream_size() -> None:
    expected = {
        "nano": "RFDETRNano",
        "small": "RFDETRSmall",
        "medium": "RFDETRMedium",
        "large": "RFDETRLarge",
        "base": "RFDETRBase",
        "seg-nano": "RFDETRSegNano",
        "seg-xlarge": "RFDETRSegXLarge",
        "seg-2xlarge": "RFDETRSeg2XLarge",
    }
    for size, name in expected.items():
        fields = upstream_fields({"model": get_preset(size).model_dump(mode="json")}, None)
        assert fields["model_name"] == name
        assert fields["args"]["segmentation_head"] is size.startswith("seg-")
        assert "class_names" not in fields["args"]
    tiny = upstream_fields({"model": get_preset("tiny").model_dump(mode="json")}, ["a"])
    assert "model_name" not in tiny  # upstream has no such size
    assert upstream_fields({"seed": 1}, ["a"]) == {}
