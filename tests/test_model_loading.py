"""The public classes load our checkpoints and upstream-format files into the real model."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from rfdetr import RFDETRNano
from rfdetr.api import RFDETRModel
from rfdetr.checkpoints import CheckpointError, save_checkpoint
from rfdetr.coco_classes import COCO_CLASS_NAMES, COCO_CLASSES
from rfdetr.hub import WeightsUnavailableError


class TinyDetector(RFDETRModel):
    size = "tiny"


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 255, (40, 60, 3), dtype=np.uint8)


def test_own_checkpoint_round_trip_keeps_weights_config_and_names(
    tmp_path: Path, image: np.ndarray
) -> None:
    trained = TinyDetector(
        pretrain_weights=None, device="cpu", class_names=["a", "b"], resolution=96
    )
    path = save_checkpoint(
        tmp_path / "checkpoint_best_total.pth",
        trained.model.state_dict(),
        config={"model": trained.config.model_dump(mode="json")},
        class_names=trained.class_names,
    )
    # Our files are plain data: no allow-list needed.
    assert set(torch.load(path, weights_only=True)) >= {"model", "config", "class_names"}
    loaded = TinyDetector(pretrain_weights=path, device="cpu")
    assert loaded.class_names == ["a", "b"]
    assert loaded.config.resolution == 96 and loaded.config.num_classes == 2
    first = trained.predict(image, threshold=0.0)
    second = loaded.predict(image, threshold=0.0)
    np.testing.assert_allclose(first.xyxy, second.xyxy, atol=1e-5)
    np.testing.assert_allclose(first.confidence, second.confidence, atol=1e-6)


def test_new_class_count_reinitialises_the_head_explicitly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = TinyDetector(pretrain_weights=None, device="cpu")
    path = save_checkpoint(
        tmp_path / "ckpt.pth",
        base.model.state_dict(),
        config=base.config.model_dump(mode="json"),
        class_names=["x", "y", "z"],
    )
    with caplog.at_level("INFO"):
        model = TinyDetector(pretrain_weights=path, device="cpu", class_names=["only"])
    assert model.model.class_embed.out_features == 2
    assert model.class_names == ["only"]
    assert "re-initialising the class head for 1 classes" in caplog.text
    # The backbone weights did come from the checkpoint.
    key = "backbone.0.encoder.encoder.embeddings.cls_token"
    torch.testing.assert_close(model.model.state_dict()[key], base.model.state_dict()[key])


def upstream_legacy_file(path: Path, model: RFDETRModel, class_names: object) -> Path:
    """An upstream 1.4-style file: weights plus a pickled argparse.Namespace of arguments."""
    args = argparse.Namespace(
        class_names=class_names,
        num_queries=model.config.num_queries,
        group_detr=model.config.group_detr,
        resolution=model.config.resolution,
        lr=1e-4,
    )
    torch.save({"model": model.model.state_dict(), "args": args, "epoch": 3}, path)
    return path


def test_upstream_legacy_file_loads_with_coco_class_mapping(tmp_path: Path) -> None:
    # A 90-class head whose logit columns are COCO category ids, as the official weights.
    source = TinyDetector(pretrain_weights=None, device="cpu", num_classes=90)
    path = upstream_legacy_file(tmp_path / "coco.pth", source, COCO_CLASS_NAMES)
    model = TinyDetector(pretrain_weights=path, device="cpu")
    assert model.class_names == COCO_CLASS_NAMES and len(model.class_names) == 80
    # Make the "dog" column (COCO id 18) win everywhere: predictions say class "dog".
    with torch.no_grad():
        model.model.class_embed.bias.fill_(-20.0)
        model.model.class_embed.bias[18] = 20.0
    det = model.predict(np.zeros((32, 32, 3), dtype=np.uint8), threshold=0.5)
    assert len(det) > 0
    assert set(det.data["class_name"]) == {COCO_CLASSES[18]}
    assert set(det.class_id) == {COCO_CLASS_NAMES.index("dog")}


def test_a_detector_file_into_a_segmentation_model_names_the_key(tmp_path: Path) -> None:
    class TinySeg(RFDETRModel):
        size = "tiny-seg"

    source = TinyDetector(pretrain_weights=None, device="cpu")
    path = upstream_legacy_file(tmp_path / "det.pth", source, ["a", "b", "c"])
    with pytest.raises(CheckpointError, match="segmentation_head") as info:
        TinySeg(pretrain_weights=path, device="cpu")
    assert "\n" not in str(info.value)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_default_weights_offline_error_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RFDETR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RFDETR_WEIGHTS_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(WeightsUnavailableError) as info:
        RFDETRNano(device="cpu")
    message = str(info.value)
    assert "\n" not in message
    assert "pretrain_weights=None" in message and "rf-detr-nano.pth" in message
    assert not any((tmp_path / "cache").glob("*.pth")), "no partial file may stay in the cache"
