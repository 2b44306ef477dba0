"""Checkpoint reading: ours and upstream formats, safely, and the refusals (one-line errors)."""

from __future__ import annotations

import argparse
import collections
import os
import pickle
import random
from pathlib import Path

import pytest
import torch
from weights_helpers import assert_one_line, same_weights, tiny_detector

from rfdetr.checkpoints import (
    CheckpointError,
    load_weights,
    read_checkpoint,
    save_checkpoint,
)
from rfdetr.coco_classes import COCO_CATEGORY_IDS, COCO_CLASS_NAMES, COCO_CLASSES

# ---------------------------------------------------------------- reading: our format


def test_own_checkpoint_round_trip_is_plain_data(tmp_path: Path) -> None:
    model = tiny_detector()
    config = {"model": {"num_queries": 4, "group_detr": 2, "resolution": 64}, "seed": 1}
    path = save_checkpoint(
        tmp_path / "run" / "best.pth",
        model.state_dict(),
        config=config,
        class_names=["cat", "dog", "fox"],
        epoch=7,
        metrics={"map50_95": 0.25},
    )
    raw = torch.load(path, map_location="cpu", weights_only=True)  # no allow-list needed
    assert raw["config"] == config
    loaded = read_checkpoint(path)
    assert loaded.format == "rfdetr"
    assert (loaded.num_classes, loaded.class_names, loaded.label_to_logit) == (
        3,
        ["cat", "dog", "fox"],
        None,
    )
    assert (loaded.epoch, loaded.metrics, loaded.config) == (7, {"map50_95": 0.25}, config)
    assert (loaded.num_queries, loaded.group_detr) == (4, 2)
    fresh = tiny_detector()
    load_weights(fresh, loaded, num_classes=3, num_queries=4, group_detr=2)
    assert same_weights(fresh, model)
    assert [p.name for p in path.parent.iterdir()] == ["best.pth"]  # no temp file left


def test_save_refuses_non_plain_metadata(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="PosixPath"):
        save_checkpoint(
            tmp_path / "x.pth",
            tiny_detector().state_dict(),
            config={"dataset_dir": Path("/data")},
            class_names=None,
        )
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- reading: upstream formats


def test_upstream_legacy_namespace_file_loads(tmp_path: Path) -> None:
    model = tiny_detector()
    args = argparse.Namespace(
        class_names=["a", "b", "c"], num_queries=4, group_detr=2, dataset_file="yolo", lr=1e-4
    )
    path = tmp_path / "checkpoint_best_regular.pth"
    torch.save(
        {"model": model.state_dict(), "optimizer": {"state": {}}, "epoch": 11, "args": args}, path
    )
    loaded = read_checkpoint(path)
    assert loaded.format == "upstream-legacy"
    assert loaded.args is not None and loaded.args["lr"] == 1e-4
    assert (loaded.class_names, loaded.label_to_logit, loaded.epoch) == (["a", "b", "c"], None, 11)
    assert (loaded.num_queries, loaded.group_detr) == (4, 2)


def test_upstream_new_format_loads(tmp_path: Path) -> None:
    model = tiny_detector()
    sd = model.state_dict()
    sd["_kp_active_mask"] = torch.zeros(0, 0, dtype=torch.bool)
    path = tmp_path / "checkpoint_best_total.pth"
    torch.save(
        {
            "model": sd,
            "state_dict": {f"model.{k}": v for k, v in sd.items()},
            "args": {"class_names": ["a", "b", "c"], "epochs": 3},
            "model_name": "RFDETRNano",
            "model_config": {"num_queries": 4, "group_detr": 2, "resolution": 64},
            "rfdetr_version": "1.11.2",
            "best_total_source": "ema",
        },
        path,
    )
    loaded = read_checkpoint(path)
    assert loaded.format == "upstream"
    assert loaded.config == {"num_queries": 4, "group_detr": 2, "resolution": 64}
    assert loaded.extras["model_name"] == "RFDETRNano"
    assert loaded.extras["best_total_source"] == "ema"
    fresh = tiny_detector()
    load_weights(fresh, loaded)  # the empty keypoint buffer is dropped, nothing else is
    assert same_weights(fresh, model)


def test_upstream_lightning_ckpt_loads(tmp_path: Path) -> None:
    model = tiny_detector()
    path = tmp_path / "last.ckpt"
    state = {f"model._orig_mod.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"class_names": ["a", "b", "c"]}}, path)
    loaded = read_checkpoint(path)
    assert loaded.format == "upstream-lightning"
    assert loaded.class_names == ["a", "b", "c"]
    assert set(loaded.state_dict) == set(model.state_dict())


@pytest.mark.parametrize(
    "class_names", [None, list(COCO_CLASS_NAMES), dict(COCO_CLASSES)], ids=["none", "list", "dict"]
)
def test_coco_pretrained_head_maps_to_coco_category_ids(tmp_path: Path, class_names) -> None:
    path = tmp_path / "rf-detr-nano.pth"
    args = argparse.Namespace(class_names=class_names, dataset_file="coco")
    torch.save({"model": tiny_detector(num_classes=90).state_dict(), "args": args}, path)
    loaded = read_checkpoint(path)
    assert loaded.num_classes == 90
    assert loaded.class_names == COCO_CLASS_NAMES and len(loaded.class_names) == 80
    assert loaded.label_to_logit == COCO_CATEGORY_IDS
    assert loaded.class_names[loaded.label_to_logit.index(18)] == "dog"


def test_upstream_14_coco_format_training_uses_ids_from_one(tmp_path: Path) -> None:
    # Upstream 1.4.x: Roboflow COCO export, num_classes = len(names) + 1, labels = category ids.
    path = tmp_path / "checkpoint_best_total.pth"
    args = argparse.Namespace(class_names=["a", "b"], dataset_file="roboflow", num_classes=3)
    torch.save({"model": tiny_detector(num_classes=3).state_dict(), "args": args}, path)
    loaded = read_checkpoint(path)
    assert (loaded.class_names, loaded.label_to_logit) == (["a", "b"], [1, 2])


# ---------------------------------------------------------------- reading: refusals


class _Shell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _FancyDict(collections.OrderedDict):
    pass


def _write_refused(kind: str, path: Path) -> None:
    sd = tiny_detector().state_dict()
    if kind == "os-system":
        torch.save({"model": sd, "args": _Shell(path.with_suffix(".pwned"))}, path)
    elif kind == "dict-subclass":
        torch.save({"model": _FancyDict(sd)}, path)
    elif kind == "random-bytes":
        path.write_bytes(random.Random(0).randbytes(2048))
    elif kind == "truncated":
        torch.save({"model": sd}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "no-model-key":
        torch.save({"weights": sd}, path)
    elif kind == "not-a-dict":
        torch.save([1, 2, 3], path)
    elif kind == "plain-pickle":
        path.write_bytes(pickle.dumps({"model": {}}))


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("os-system", "system"),
        ("dict-subclass", "_FancyDict"),
        ("random-bytes", "not a PyTorch checkpoint"),
        ("truncated", "truncated or corrupt"),
        ("empty", "empty"),
        ("no-model-key", "no 'model' state dict"),
        ("not-a-dict", "holds a list"),
        ("plain-pickle", "not a PyTorch checkpoint"),
    ],
)
def test_not_a_checkpoint_gives_one_line_error(tmp_path: Path, kind: str, needle: str) -> None:
    path = tmp_path / f"{kind}.pth"
    _write_refused(kind, path)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    assert_one_line(err, str(path), needle)
    assert not path.with_suffix(".pwned").exists()  # the pickled command never ran


@pytest.mark.parametrize("seed", range(30))
def test_garbage_never_escapes_as_another_exception(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "garbage.pth"
    torch.save({"model": tiny_detector().state_dict()}, path)
    data = bytearray(path.read_bytes())
    for _ in range(8):  # flip bytes anywhere, including inside the pickle
        data[rng.randrange(len(data))] = rng.randrange(256)
    path.write_bytes(bytes(data) if seed % 2 else rng.randbytes(rng.randrange(1, 4096)))
    try:
        read_checkpoint(path)
    except CheckpointError as err:
        assert "\n" not in str(err) and str(path) in str(err)


def test_missing_file_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(tmp_path / "nope.pth")
    assert_one_line(err, "nope.pth", "pretrain_weights=None")


def test_state_dict_without_class_head_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "backbone.pth"
    torch.save({"model": {"backbone.w": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    assert_one_line(err, "class_embed.bias")
