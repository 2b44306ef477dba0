"""Load-time dataset errors (issue 13): they keep their type and one-line message through
DataLoader workers, images decode as training needs them or are refused, and every file the
loaders open stays inside the dataset folder."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from rfdetr.data.dataset import build_dataset
from rfdetr.data.images import load_rgb
from rfdetr.data.loader import build_dataloader
from rfdetr.data.problems import DatasetError
from rfdetr.data.validation import validate_dataset

Breaker = Callable[[Path, SimpleNamespace], str]


def _truncate(path: Path) -> None:
    """Cut the last fifth: the header stays intact, the pixel data is incomplete."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 4 // 5])


def coco_missing(root: Path, b: SimpleNamespace) -> str:
    (root / "train" / "train_0.jpg").unlink()
    return "train_0.jpg"


def coco_truncated(root: Path, b: SimpleNamespace) -> str:
    _truncate(root / "train" / "train_0.jpg")
    return "train_0.jpg"


def coco_zero_size(root: Path, b: SimpleNamespace) -> str:
    (root / "train" / "train_0.jpg").write_bytes(b"")
    return "train_0.jpg"


def coco_garbage(root: Path, b: SimpleNamespace) -> str:
    (root / "train" / "train_0.jpg").write_bytes(b"\x89PNG not really" * 40)
    return "train_0.jpg"


def coco_bomb(root: Path, b: SimpleNamespace) -> str:
    Image.new("1", (20_000, 20_000)).save(root / "train" / "train_0.jpg", format="PNG")
    return "train_0.jpg"


def coco_size_mismatch(root: Path, b: SimpleNamespace) -> str:
    b.write_image(root / "train" / "train_0.jpg", width=b.width + 1)
    return "train_0.jpg"


def coco_symlink_out(root: Path, b: SimpleNamespace) -> str:
    outside = root.parent / "outside.jpg"
    b.write_image(outside)
    (root / "train" / "train_0.jpg").unlink()
    (root / "train" / "train_0.jpg").symlink_to(outside)
    return "train_0.jpg"


def _yolo_label(text: str) -> Breaker:
    def breaker(root: Path, b: SimpleNamespace) -> str:
        (root / "train" / "labels" / "train_0.txt").write_text(text)
        return "train_0.txt:1"

    breaker.__name__ = f"yolo_label_{text.split()[0]}_{len(text.split())}"
    return breaker


def yolo_image_symlink_out(root: Path, b: SimpleNamespace) -> str:
    outside = root.parent / "outside.png"
    b.write_image(outside)
    (root / "train" / "images" / "train_0.png").unlink()
    (root / "train" / "images" / "train_0.png").symlink_to(outside)
    return "train_0.png"


def yolo_label_symlink_out(root: Path, b: SimpleNamespace) -> str:
    outside = root.parent / "secret.txt"
    outside.write_text("hunter2-token 0.5 0.5 0.1 0.1\n")
    label = root / "train" / "labels" / "train_0.txt"
    label.unlink()
    label.symlink_to(outside)
    return "train_0.txt"


COCO_BREAKERS = [
    coco_missing,
    coco_truncated,
    coco_zero_size,
    coco_garbage,
    coco_bomb,
    coco_size_mismatch,
    coco_symlink_out,
]
YOLO_BREAKERS = [
    _yolo_label("0 0.5 0.5 0.2\n"),
    _yolo_label("0 0.5 0.5 0.2 abc\n"),
    _yolo_label("5 0.5 0.5 0.2 0.2\n"),
    _yolo_label("0 0.5 0.5 1.5 0.2\n"),
    _yolo_label("0 0.5 0.5 0.0 0.2\n"),
    _yolo_label("1e20 0.5 0.5 0.2 0.2\n"),
    yolo_image_symlink_out,
    yolo_label_symlink_out,
]


def _make(fmt: str, root: Path, b: SimpleNamespace) -> Path:
    return b.make_coco(root) if fmt == "coco" else b.make_yolo(root)


def _cases() -> list[tuple[str, Breaker]]:
    return [("coco", f) for f in COCO_BREAKERS] + [("yolo", f) for f in YOLO_BREAKERS]


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize(("fmt", "breaker"), _cases(), ids=lambda v: getattr(v, "__name__", v))
def test_load_errors_keep_their_type_and_line_through_workers(
    tmp_path: Path, build: SimpleNamespace, fmt: str, breaker: Breaker, num_workers: int
) -> None:
    root = _make(fmt, tmp_path / "d", build)
    name = breaker(root, build)
    dataset = build_dataset(root, "train", 64, train=False)
    batches = iter(build_dataloader(dataset, 1, num_workers=num_workers))
    try:
        with pytest.raises(DatasetError) as caught:
            for _ in batches:
                pass
    finally:  # the traceback keeps the iterator alive: stop its workers now, not at a later GC
        getattr(batches, "_shutdown_workers", lambda: None)()
    message = str(caught.value)
    assert name in message and "\n" not in message and "Traceback" not in message
    assert "hunter2" not in message


def test_a_missing_image_is_named_missing_not_undecodable(tmp_path: Path) -> None:
    """Was ``cannot decode image (No such file or directory)``."""
    with pytest.raises(DatasetError, match=r"gone\.jpg: image file not found$"):
        load_rgb(tmp_path / "gone.jpg")


@pytest.mark.parametrize(("fmt", "breaker"), _cases(), ids=lambda v: getattr(v, "__name__", v))
def test_validation_reports_every_load_error(
    tmp_path: Path, build: SimpleNamespace, fmt: str, breaker: Breaker
) -> None:
    root = _make(fmt, tmp_path / "d", build)
    name = breaker(root, build)
    report = validate_dataset(root, deep=True)
    assert any(name in p.path for p in report.errors), [str(p) for p in report.problems]
    assert not any("hunter2" in str(p) for p in report.problems)


def test_pipeline_sees_a_worker_dataset_error_as_a_user_error(
    tmp_path: Path, build: SimpleNamespace
) -> None:
    from rfdetr.errors import UserError

    root = build.make_coco(tmp_path / "d")
    coco_truncated(root, build)
    dataset = build_dataset(root, "train", 64, train=False)
    batches = iter(build_dataloader(dataset, 1, num_workers=2))
    try:
        with pytest.raises(Exception) as caught:
            next(batches)
    finally:
        batches.close()  # drops the DataLoader iterator, which shuts its workers down
    assert isinstance(caught.value, UserError), repr(caught.value)
    assert "train_0.jpg" in str(caught.value) and "\n" not in str(caught.value)


def test_dataset_error_survives_pickling() -> None:
    error = DatasetError(Path("d/a: b.jpg"), "cannot decode image")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is DatasetError and str(again) == str(error)
    assert (again.path, again.problem) == (error.path, error.problem)


def test_split_folder_symlinked_outside_is_refused_by_the_loader(
    tmp_path: Path, build: SimpleNamespace
) -> None:
    root = build.make_coco(tmp_path / "d")
    (root / "valid").rename(tmp_path / "elsewhere")
    (root / "valid").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(DatasetError, match="outside the dataset folder"):
        build_dataset(root, "valid", 64, train=False)


def test_ultralytics_split_symlinked_outside_is_refused_by_the_loader(
    tmp_path: Path, build: SimpleNamespace
) -> None:
    roboflow = build.make_yolo(tmp_path / "r")
    root = tmp_path / "u"
    for split, key in (("train", "train"), ("valid", "val")):
        for kind in ("images", "labels"):
            (root / kind).mkdir(parents=True, exist_ok=True)
            (roboflow / split / kind).rename(root / kind / key)
    (root / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [cat, dog]\n")
    (root / "images" / "val").rename(tmp_path / "elsewhere")
    (root / "images" / "val").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(DatasetError, match="outside the dataset folder"):
        build_dataset(root, "valid", 64, train=False)
    assert not validate_dataset(root).usable


def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.linspace(0, 65535, 48 * 64).reshape(48, 64).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = load_rgb(path).numpy()
    expected = np.round(values / 257).astype(np.uint8)
    assert np.array_equal(rgb[0], expected) and np.array_equal(rgb[2], expected)


def test_float_tiff_is_refused_not_blanked(tmp_path: Path, build: SimpleNamespace) -> None:
    root = build.make_yolo(tmp_path / "d")
    path = root / "train" / "images" / "train_0.tif"
    Image.fromarray(np.full((48, 64), 0.5, dtype=np.float32)).save(path)
    (root / "train" / "images" / "train_0.png").unlink()
    with pytest.raises(DatasetError, match="floating-point"):
        load_rgb(path)
    assert any("floating-point" in p.message for p in validate_dataset(root).errors)


def test_truncated_jpeg_is_an_error_with_deep_validation(
    tmp_path: Path, build: SimpleNamespace
) -> None:
    root = build.make_coco(tmp_path / "d")
    _truncate(root / "valid" / "valid_1.jpg")
    assert validate_dataset(root).usable  # the header is intact: only decoding finds it
    errors = validate_dataset(root, deep=True).errors
    assert [p.path for p in errors] == [str(root / "valid" / "valid_1.jpg")]


def test_pipeline_validate_step_decodes_images(tmp_path: Path, build: SimpleNamespace) -> None:
    from pipelines.steps.dataset import DatasetInvalidError, validate_fetched

    root = build.make_coco(tmp_path / "d")
    _truncate(root / "train" / "train_2.jpg")
    with pytest.raises(DatasetInvalidError, match=r"train_2\.jpg"):
        validate_fetched(root)


def test_pixel_limit_is_clear_and_configurable(
    tmp_path: Path, build: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = build.make_yolo(tmp_path / "d")
    big = root / "train" / "images" / "train_0.png"
    Image.new("1", (12_000, 12_000)).save(big)
    problems = [p.message for p in validate_dataset(root).errors]
    assert any("RFDETR_MAX_IMAGE_PIXELS" in m for m in problems), problems
    with pytest.raises(DatasetError, match="RFDETR_MAX_IMAGE_PIXELS"):
        load_rgb(big)
    monkeypatch.setenv("RFDETR_MAX_IMAGE_PIXELS", str(64 * 48 - 1))
    with pytest.raises(DatasetError, match="3072 pixels"):
        load_rgb(root / "train" / "images" / "train_1.png")
