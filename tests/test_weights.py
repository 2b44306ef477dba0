"""Checkpoint reading (ours and upstream formats, safely) and strict loading into a module."""

from __future__ import annotations

import argparse
import collections
import logging
import os
import pickle
import random
from pathlib import Path

import pytest
import torch
from torch import nn

from rfdetr.coco_classes import COCO_CATEGORY_IDS, COCO_CLASS_NAMES, COCO_CLASSES
from rfdetr.weights import (
    CheckpointError,
    load_state_dict_strict,
    load_weights,
    read_checkpoint,
    save_checkpoint,
)

HIDDEN = 8


def tiny_detector(num_classes: int = 3, num_queries: int = 4, groups: int = 2) -> nn.Module:
    """A module with upstream RF-DETR key names and toy shapes, random values, and one buffer."""
    shapes = {
        "backbone.0.encoder.encoder.embeddings.position_embeddings": (1, 5, HIDDEN),
        "transformer.decoder.layers.0.cross_attn.sampling_offsets.weight": (16, HIDDEN),
        "class_embed.weight": (num_classes + 1, HIDDEN),
        "class_embed.bias": (num_classes + 1,),
        "refpoint_embed.weight": (num_queries * groups, 4),
        "query_feat.weight": (num_queries * groups, HIDDEN),
    }
    for g in range(groups):
        shapes[f"transformer.enc_out_class_embed.{g}.weight"] = (num_classes + 1, HIDDEN)
        shapes[f"transformer.enc_out_class_embed.{g}.bias"] = (num_classes + 1,)
    root = nn.Module()
    for key, shape in shapes.items():
        *path, leaf = key.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        module.register_parameter(leaf, nn.Parameter(torch.randn(shape)))
    root.backbone.register_buffer("running_stat", torch.randn(3))
    return root


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def assert_one_line(err: pytest.ExceptionInfo[BaseException], *needles: str) -> None:
    text = str(err.value)
    assert "\n" not in text
    for needle in needles:
        assert needle in text, (needle, text)


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


# ---------------------------------------------------------------- strict loading


def test_missing_key_is_named() -> None:
    sd = tiny_detector().state_dict()
    del sd["transformer.decoder.layers.0.cross_attn.sampling_offsets.weight"]
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(tiny_detector(), sd, source="ck.pth")
    assert_one_line(err, "ck.pth", "missing key", "sampling_offsets.weight", "[16, 8]")


def test_unexpected_key_is_named() -> None:
    sd = tiny_detector().state_dict()
    sd["segmentation_head.bias"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(tiny_detector(), sd, source="ck.pth")
    assert_one_line(err, "ck.pth", "unexpected key 'segmentation_head.bias'")


def test_missing_buffer_is_named() -> None:
    sd = tiny_detector().state_dict()
    del sd["backbone.running_stat"]
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(tiny_detector(), sd, source="ck.pth")
    assert_one_line(err, "backbone.running_stat")


def test_shape_mismatch_names_key_and_both_shapes() -> None:
    sd = tiny_detector().state_dict()
    key = "backbone.0.encoder.encoder.embeddings.position_embeddings"
    sd[key] = torch.zeros(1, 10, HIDDEN)
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(tiny_detector(), sd, source="ck.pth")
    assert_one_line(err, key, "[1, 10, 8]", "[1, 5, 8]", "resolution")


def test_keypoint_buffer_dropped_only_when_empty() -> None:
    model, sd = tiny_detector(), tiny_detector().state_dict()
    load_state_dict_strict(
        model, {**sd, "_kp_active_mask": torch.zeros(0, 0, dtype=torch.bool)}, source="a"
    )
    real_mask = torch.ones(1, 17, dtype=torch.bool)
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(model, {**sd, "_kp_active_mask": real_mask}, source="a")
    assert_one_line(err, "unexpected key '_kp_active_mask'")


def test_load_does_not_modify_input_and_copies_values() -> None:
    source_model = tiny_detector()
    sd = source_model.state_dict()
    before = {k: v.clone() for k, v in sd.items()}
    target = tiny_detector(num_queries=2)
    load_state_dict_strict(target, sd, source="ck", num_queries_total=4)
    assert all(torch.equal(sd[k], before[k]) for k in sd) and sd.keys() == before.keys()


def test_query_tables_cut_per_group(caplog: pytest.LogCaptureFixture) -> None:
    source = tiny_detector(num_queries=6, groups=2)
    sd = source.state_dict()
    target = tiny_detector(num_queries=4, groups=2)
    with caplog.at_level(logging.INFO, logger="rfdetr.weights"):
        load_state_dict_strict(
            target, sd, source="ck", num_queries_total=8, group_detr=2, checkpoint_group_detr=2
        )
    got = target.state_dict()["query_feat.weight"]
    assert torch.equal(got[:4], sd["query_feat.weight"][:4])
    assert torch.equal(got[4:], sd["query_feat.weight"][6:10])  # group 1 starts at row 6
    assert "cut from 12 to 8 rows" in caplog.text


def test_more_queries_per_group_than_trained_is_an_error() -> None:
    target = tiny_detector(num_queries=3, groups=2)  # 6 rows, but 3 > 2 queries per group
    sd = target.state_dict()
    sd["refpoint_embed.weight"] = torch.zeros(8, 4)  # 4 groups of 2 queries
    sd["query_feat.weight"] = torch.zeros(8, HIDDEN)
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(
            target, sd, source="ck", num_queries_total=6, group_detr=2, checkpoint_group_detr=4
        )
    assert_one_line(err, "shape mismatch", "[8, 4]", "[6, 4]")


def test_query_tables_flat_prefix_without_group_info() -> None:
    sd = tiny_detector(num_queries=6, groups=2).state_dict()
    target = tiny_detector(num_queries=3, groups=2)
    load_state_dict_strict(target, sd, source="ck", num_queries_total=6)
    assert torch.equal(
        target.state_dict()["refpoint_embed.weight"], sd["refpoint_embed.weight"][:6]
    )


def test_query_rows_differ_without_opt_in_is_an_error() -> None:
    sd = tiny_detector(num_queries=6).state_dict()
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(tiny_detector(num_queries=4), sd, source="ck")
    assert_one_line(err, "[12, 4]", "[8, 4]", "num_queries_total")


def test_fewer_query_rows_than_model_is_an_error() -> None:
    sd = tiny_detector(num_queries=2).state_dict()
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(tiny_detector(num_queries=4), sd, source="ck", num_queries_total=8)
    assert_one_line(err, "shape mismatch", "[4, 4]", "[8, 4]")


def test_head_reinit_tiles_rows_for_more_classes(caplog: pytest.LogCaptureFixture) -> None:
    sd = tiny_detector(num_classes=2).state_dict()
    target = tiny_detector(num_classes=5)
    with caplog.at_level(logging.INFO, logger="rfdetr.weights"):
        load_state_dict_strict(target, sd, source="ck", reinit_head_for=5)
    got = target.state_dict()
    old = sd["class_embed.weight"]
    assert torch.equal(got["class_embed.weight"], torch.cat([old, old])[:6])
    assert torch.equal(
        got["transformer.enc_out_class_embed.1.bias"][3:],
        sd["transformer.enc_out_class_embed.1.bias"],
    )
    assert "resized from 2 to 5 classes" in caplog.text


def test_head_reinit_crops_rows_for_fewer_classes() -> None:
    sd = tiny_detector(num_classes=90).state_dict()
    target = tiny_detector(num_classes=1)
    load_state_dict_strict(target, sd, source="ck", reinit_head_for=1)
    assert torch.equal(target.state_dict()["class_embed.bias"], sd["class_embed.bias"][:2])


def test_class_count_mismatch_without_opt_in_is_an_error() -> None:
    sd = tiny_detector(num_classes=90).state_dict()
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(tiny_detector(num_classes=3), sd, source="ck")
    assert_one_line(err, "enc_out_class_embed.0.weight", "[91, 8]", "[4, 8]", "reinit_head_for")


def test_load_weights_resizes_head_and_drops_stale_names(tmp_path: Path) -> None:
    path = save_checkpoint(
        tmp_path / "c.pth", tiny_detector(num_classes=90).state_dict(), config={}, class_names=None
    )
    loaded = load_weights(tiny_detector(num_classes=3), path, num_classes=3)
    assert (loaded.num_classes, loaded.class_names, loaded.label_to_logit) == (3, None, None)


def test_meta_model_loads_with_assign() -> None:
    sd = tiny_detector().state_dict()
    with torch.device("meta"):
        target = tiny_detector()
    load_state_dict_strict(target, sd, source="ck", assign=True)
    assert torch.equal(target.state_dict()["class_embed.weight"], sd["class_embed.weight"])
