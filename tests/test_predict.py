"""`predict()` on every input type, its outputs, and one-line errors for bad input."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import torch
from PIL import Image

from rfdetr import RFDETRNano, RFDETRSegNano
from rfdetr.api import RFDETRModel
from rfdetr.config import get_preset, list_presets, toy_version
from rfdetr.config.model import ConfigError


class TinyDetector(RFDETRModel):
    size = "tiny"


class TinySegmenter(RFDETRModel):
    size = "tiny-seg"


@pytest.fixture(scope="module")
def detector() -> TinyDetector:
    return TinyDetector(pretrain_weights=None, device="cpu", class_names=["cat", "dog", "cow"])


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)


def test_every_input_type_gives_the_same_detections(
    detector: TinyDetector, rgb: np.ndarray, tmp_path: Path
) -> None:
    path = tmp_path / "img.png"
    Image.fromarray(rgb).save(path)
    tensor = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    inputs = [str(path), path, Image.fromarray(rgb), rgb, tensor]
    results = [detector.predict(item, threshold=0.0) for item in inputs]
    for det in results:
        assert isinstance(det, sv.Detections)
        assert len(det) == detector.config.num_select
        np.testing.assert_allclose(det.xyxy, results[0].xyxy, atol=1e-3)
    det = results[0]
    assert (det.xyxy[:, [0, 2]] <= 70).all() and (det.xyxy[:, [1, 3]] <= 50).all()
    assert (det.xyxy >= 0).all()
    assert set(det.class_id) <= {0, 1, 2}
    names = np.array(["cat", "dog", "cow"])[det.class_id]
    assert (det.data["class_name"] == names).all()
    assert ((det.confidence >= 0) & (det.confidence <= 1)).all()


def test_a_list_gives_a_list_and_threshold_filters(detector: TinyDetector, rgb: np.ndarray) -> None:
    out = detector.predict([rgb, rgb[:20]], threshold=0.0, batch_size=1)
    assert isinstance(out, list) and len(out) == 2
    strict = detector.predict(rgb, threshold=0.999)
    assert len(strict) < len(out[0])
    assert (strict.confidence > 0.999).all()


def test_segmentation_masks_have_the_original_image_size(rgb: np.ndarray) -> None:
    model = TinySegmenter(pretrain_weights=None, device="cpu")
    det = model.predict(rgb, threshold=0.0)
    assert det.mask is not None and det.mask.shape == (len(det), 50, 70)
    assert det.mask.dtype == bool


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("missing.jpg", "image file not found"),
        (torch.rand(3, 8, 8) * 2, "values must lie in \\[0, 1\\]"),
        (torch.rand(4, 8, 8), "must be 3xHxW"),
        (np.zeros((8, 8), dtype=np.uint8), "must be HxWx3"),
        (np.zeros((8, 8, 4), dtype=np.uint8), "must be HxWx3"),
        (torch.zeros(3, 8, 8, dtype=torch.uint8), "must be float"),
        (12, "unsupported type int"),
        (np.zeros((0, 5, 3), dtype=np.uint8), "empty image \\(0x5 pixels\\)"),
        (torch.zeros(3, 4, 0), "empty image \\(4x0 pixels\\)"),
    ],
)
def test_bad_input_is_a_one_line_value_error(detector: TinyDetector, bad, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        detector.predict(bad)
    assert "\n" not in str(info.value)


def test_a_file_that_is_not_an_image(detector: TinyDetector, tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("not pixels")
    with pytest.raises(ValueError, match=r"notes\.jpg: cannot decode image") as info:
        detector.predict(path)
    assert "not an image format PIL reads" in str(info.value)
    assert "BufferedReader" not in str(info.value)  # PIL's own text names our file object


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True])
def test_a_batch_size_that_is_not_positive_is_one_line(
    detector: TinyDetector, batch_size: object
) -> None:
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        detector.predict(np.zeros((8, 8, 3), np.uint8), batch_size=batch_size)


def test_a_16_bit_image_is_scaled_as_training_reads_it(
    detector: TinyDetector, tmp_path: Path
) -> None:
    """A 16-bit grey PNG (mode ``I;16``) is scaled to 8 bits (``v / 257``), as training's
    `load_rgb` does; PIL's ``convert("RGB")`` would clip every value above 255 to white."""
    grey = np.random.default_rng(1).integers(0, 65536, (40, 60), dtype=np.uint16)
    path = tmp_path / "depth.png"
    Image.fromarray(grey).save(path)
    assert Image.open(path).mode == "I;16"
    grey8 = np.round(grey / 257).astype(np.uint8)
    expected = detector.predict(np.repeat(grey8[:, :, None], 3, axis=2), threshold=0.0)
    for item in (path, Image.open(path)):
        det = detector.predict(item, threshold=0.0)
        np.testing.assert_allclose(det.xyxy, expected.xyxy, atol=1e-4)
        np.testing.assert_allclose(det.confidence, expected.confidence, atol=1e-5)


def test_an_image_over_the_pixel_limit_is_one_line(
    detector: TinyDetector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RFDETR_MAX_IMAGE_PIXELS", "1000")
    path = tmp_path / "big.png"
    Image.new("RGB", (50, 40)).save(path)
    with pytest.raises(ValueError, match=r"big\.png: image is 50x40 = 2000 pixels, more than"):
        detector.predict(path)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"resoluton": 64}, "unknown ModelConfig option 'resoluton'; did you mean 'resolution'"),
        ({"resolution": "abc"}, "resolution: Input should be a valid integer"),
        ({"num_classes": 0}, "num_classes: Input should be greater than or equal to 1"),
    ],
)
def test_a_bad_constructor_option_is_one_line(options: dict, message: str) -> None:
    """As ``model.train(...)`` reports its options: not pydantic's multi-line dump."""
    with pytest.raises(ConfigError, match=f"^TinyDetector\\(...\\): .*{message}") as info:
        TinyDetector(pretrain_weights=None, device="cpu", **options)
    assert "\n" not in str(info.value) and "input_value" not in str(info.value)


def test_class_names_must_agree_with_num_classes() -> None:
    with pytest.raises(ValueError, match="class_names has 2 names but num_classes is 3"):
        TinyDetector(pretrain_weights=None, num_classes=3, class_names=["a", "b"])


@pytest.mark.parametrize("size", [s for s in list_presets() if not s.startswith("tiny")])
def test_every_public_size_predicts_at_toy_size(size: str, rgb: np.ndarray) -> None:
    toy = toy_version(get_preset(size))

    class Toy(RFDETRModel):
        pass

    Toy.size = size
    model = Toy(pretrain_weights=None, device="cpu", **toy.model_dump(exclude={"name"}))
    det = model.predict(rgb, threshold=0.0)
    assert len(det) == toy.num_select
    assert (det.mask is not None) == toy.segmentation_head


@pytest.mark.slow
@pytest.mark.parametrize("cls", [RFDETRNano, RFDETRSegNano])
def test_full_size_predict(cls: type[RFDETRModel], rgb: np.ndarray) -> None:
    model = cls(pretrain_weights=None, device="cpu")
    det = model.predict(rgb, threshold=0.0)
    assert len(det) == model.config.num_select
    assert np.isfinite(det.xyxy).all()


@pytest.mark.parametrize("threshold", [None, "high", [0.5]])
def test_a_threshold_that_is_not_a_number_is_one_line(detector: TinyDetector, threshold) -> None:
    """Was a raw ``TypeError: float() argument must be ... not 'NoneType'``."""
    image = np.zeros((20, 20, 3), np.uint8)
    shown = re.escape(repr(threshold))
    with pytest.raises(ValueError, match=f"threshold must be a number in \\[0, 1\\], got {shown}"):
        detector.predict(image, threshold=threshold)
    with pytest.raises(ValueError, match=f"threshold for 'cat' must be .*{shown}"):
        detector.predict(image, threshold={"cat": threshold})


def test_a_device_that_is_not_one_is_one_line() -> None:
    """Was torch's raw ``RuntimeError: Expected one of cpu, cuda, ... device type``; the same
    check and message as training's ``device`` option (``rfdetr.training.runtime``)."""
    with pytest.raises(ValueError, match="device 'gpu': not a device; use cpu, cuda or cuda:N"):
        TinyDetector(pretrain_weights=None, device="gpu")
