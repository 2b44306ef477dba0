"""YOLO datasets in the Ultralytics layout (``data.yaml`` names ``images/<split>`` folders).

The same shapes dataset is written in the Roboflow layout and moved into the Ultralytics layout,
so both must give the same detection, items and validation report.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from rfdetr.cli import main
from rfdetr.data.dataset import build_dataset
from rfdetr.data.formats import DatasetFormat, detect_format
from rfdetr.data.problems import DatasetError
from rfdetr.data.synthetic import make_shapes_dataset
from rfdetr.data.validation import validate_dataset

SPLITS = {"train": 4, "valid": 2, "test": 2}
YAML_KEYS = {"train": "train", "valid": "val", "test": "test"}
NAMES = "names: {0: circle, 1: square, 2: triangle}\n"


def roboflow_dataset(root: Path) -> Path:
    return make_shapes_dataset(root, fmt="yolo", splits=SPLITS, image_size=48, seed=3)


def to_ultralytics(roboflow: Path, dest: Path, subfolder: str = "", path_key: str | None = None):
    """Copy ``roboflow`` into ``dest`` as ``[subfolder/]images/<split>`` + ``labels/<split>``."""
    data = dest / subfolder if subfolder else dest
    for split, key in YAML_KEYS.items():
        for kind in ("images", "labels"):
            shutil.copytree(roboflow / split / kind, data / kind / key)
    lines = [f"path: {path_key}"] if path_key is not None else []
    lines += [f"{key}: images/{key}" for key in YAML_KEYS.values()]
    (dest / "data.yaml").write_text("\n".join(lines) + "\n" + NAMES)
    return dest


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    roboflow = roboflow_dataset(tmp_path / "roboflow")
    return roboflow, to_ultralytics(roboflow, tmp_path / "ultra")


def run_cli(capsys: pytest.CaptureFixture[str], root: Path) -> tuple[int, str]:
    code = main(["validate", str(root)])
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert "Traceback" not in output
    return code, output


def test_detection(pair: tuple[Path, Path]) -> None:
    roboflow, ultra = pair
    layout = detect_format(ultra)
    assert layout.format is DatasetFormat.YOLO and layout.yaml_splits
    assert layout.yaml_path == ultra / "data.yaml"
    assert layout.yolo_dirs("val") == (ultra / "images" / "val", ultra / "labels" / "val")
    assert layout.split_dir("valid") == ultra / "images" / "val"
    assert set(layout.splits) == {"train", "valid", "test"}
    # The Roboflow export layout still wins (its data.yaml names split folders too).
    old = detect_format(roboflow)
    assert not old.yaml_splits and old.split_dir("train") == roboflow / "train"
    assert old.yolo_dirs("train") == (roboflow / "train" / "images", roboflow / "train" / "labels")


def test_broken_roboflow_export_is_not_ultralytics(tmp_path: Path) -> None:
    root = tmp_path / "export"
    root.mkdir()
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\n" + NAMES)
    with pytest.raises(DatasetError, match=r"no dataset format detected; .* found: data\.yaml$"):
        detect_format(root)


def test_missing_optional_test_split(pair: tuple[Path, Path]) -> None:
    _, ultra = pair
    (ultra / "data.yaml").write_text("train: images/train\nval: images/val\ntest:\n" + NAMES)
    layout = detect_format(ultra)
    assert "test" not in layout.splits
    with pytest.raises(DatasetError, match=r"data\.yaml: no test split \(no test: key\)"):
        layout.split_dir("test")


@pytest.mark.parametrize("train", [False, True])
def test_same_items_in_both_layouts(pair: tuple[Path, Path], train: bool) -> None:
    for split in SPLITS:
        a, b = (build_dataset(root, split, 32, train=train, seed=1) for root in pair)
        assert len(a) == len(b) == SPLITS[split]
        assert a.class_map.names == b.class_map.names == ("circle", "square", "triangle")
        for index in range(len(a)):
            (image_a, target_a), (image_b, target_b) = a[index], b[index]
            assert torch.equal(image_a, image_b)
            assert target_a.keys() == target_b.keys()
            for key, value in target_a.items():
                if isinstance(value, torch.Tensor):
                    assert torch.equal(value, target_b[key]), key
                else:
                    assert value == target_b[key], key


@pytest.mark.parametrize(("subfolder", "path_key"), [("", "."), ("data", "data"), ("", "")])
def test_yaml_path_key(tmp_path: Path, subfolder: str, path_key: str) -> None:
    roboflow = roboflow_dataset(tmp_path / "roboflow")
    ultra = to_ultralytics(roboflow, tmp_path / "ultra", subfolder, path_key)
    layout = detect_format(ultra)
    base = ultra / subfolder if subfolder else ultra
    assert layout.yolo_dirs("train") == (base / "images" / "train", base / "labels" / "train")
    assert len(build_dataset(ultra, "val", 32, train=False)) == SPLITS["valid"]


def _counts(root: Path) -> dict[str, tuple[int, int]]:
    report = validate_dataset(root)
    return {name: (s.images, s.annotations) for name, s in report.splits.items()}


def test_validate_reports_the_same(pair: tuple[Path, Path], capsys) -> None:
    roboflow, ultra = pair
    for root in pair:
        code, output = run_cli(capsys, root)
        assert code == 0, output
        assert "problems: 0 error(s), 0 warning(s)" in output
    assert _counts(roboflow) == _counts(ultra)
    assert _counts(ultra)["valid"][0] == SPLITS["valid"]
    # The same orphan label and bad line in both layouts: the same problems, other paths.
    for labels in (roboflow / "train" / "labels", ultra / "labels" / "train"):
        (labels / "gone.txt").write_text("0 0.5 0.5 0.1 0.1\n")
        first = sorted(labels.glob("train_*.txt"))[0]
        first.write_text(first.read_text() + "0 0.5 0.5 2 0.1\n")
    reports = [validate_dataset(root) for root in pair]
    messages = [
        sorted((p.severity, Path(p.path).name, p.message) for p in r.problems) for r in reports
    ]
    assert messages[0] == messages[1]
    assert {m[2] for m in messages[0]} >= {
        "label file has no image with the same name; it is ignored",
        "value 2 is outside [0, 1]; YOLO coordinates are normalised",
    }
    code, output = run_cli(capsys, ultra)
    assert code == 2 and f"{ultra / 'labels' / 'train' / 'gone.txt'}: warning:" in output


def _yaml(train: str, val: str | None = "images/val", extra: str = "") -> str:
    text = f"{extra}train: {train}\n"
    return text + (f"val: {val}\n" if val is not None else "") + NAMES


ERRORS = {
    "missing_folder": (
        _yaml("images/train", "images/nope"),
        "val: images/nope: no such folder",
    ),
    "absolute": (
        _yaml("/tmp/images/train"),
        "train: /tmp/images/train: absolute paths are not allowed",
    ),
    "escapes": (
        _yaml("../roboflow/train/images"),
        "train: ../roboflow/train/images: points outside the dataset folder",
    ),
    "list": (
        _yaml("[images/train, images/more]"),
        "train: a list of image folders is not supported yet; give one image folder",
    ),
    "txt_list": (
        _yaml("train.txt"),
        "train: train.txt: a .txt list of image files is not supported yet",
    ),
    "missing_val": (
        _yaml("images/train", None),
        "val: missing; name the validation image folder (e.g. val: images/val)",
    ),
    "no_images_component": (
        _yaml("labels/train"),
        "train: labels/train: the image folder path has no 'images' component",
    ),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_bad_yaml_is_one_line_naming_the_file(
    pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str], case: str
) -> None:
    _, ultra = pair
    text, expected = ERRORS[case]
    (ultra / "data.yaml").write_text(text)
    code, output = run_cli(capsys, ultra)
    assert code == 2
    assert f"{ultra / 'data.yaml'}: error: {expected}" in output, output
    assert "problems: 1 error(s), 0 warning(s)" in output
    with pytest.raises(DatasetError) as info:
        build_dataset(ultra, "train", 32, train=False)
    assert str(info.value).startswith(f"{ultra / 'data.yaml'}: {expected}")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("path_key", ["/home/me/datasets/shapes", "../datasets/shapes", "gone"])
def test_yaml_path_key_from_another_machine_is_ignored(
    pair: tuple[Path, Path], caplog: pytest.LogCaptureFixture, path_key: str
) -> None:
    _, ultra = pair
    (ultra / "data.yaml").write_text(_yaml("images/train", extra=f"path: {path_key}\n"))
    with caplog.at_level("WARNING", logger="rfdetr.data.formats"):
        layout = detect_format(ultra)
    assert layout.yolo_dirs("train") == (ultra / "images" / "train", ultra / "labels" / "train")
    assert f"path: {path_key} is not a folder inside the dataset" in caplog.text
