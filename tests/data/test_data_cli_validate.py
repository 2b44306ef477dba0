"""`rfdetr validate`: one test per validation error (exit 2, file named, no traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from rfdetr.cli import main

Mutation = Callable[[Path, SimpleNamespace], str]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["validate", *argv])
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert "Traceback" not in output
    return code, output


def _train_json(root: Path) -> Path:
    return root / "train" / "_annotations.coco.json"


def _first_ann(field: str, value: object) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        data["annotations"][0][field] = value

    return edit


def coco_missing_annotation_file(root: Path, b: SimpleNamespace) -> str:
    (root / "valid" / "_annotations.coco.json").unlink()
    return "valid/_annotations.coco.json: error: annotation file is missing"


def coco_unreadable_annotation_file(root: Path, b: SimpleNamespace) -> str:
    path = root / "valid" / "_annotations.coco.json"
    path.unlink()
    path.mkdir()  # a folder where the file should be: reading it fails with an OSError
    return "valid/_annotations.coco.json: error: cannot read annotation file"


def coco_malformed_json(root: Path, b: SimpleNamespace) -> str:
    _train_json(root).write_text('{"images": [')
    return "train/_annotations.coco.json: error: malformed JSON at line 1"


def coco_image_missing(root: Path, b: SimpleNamespace) -> str:
    (root / "train" / "train_1.jpg").unlink()
    return "train/train_1.jpg: error: image file is missing"


def coco_image_not_decodable(root: Path, b: SimpleNamespace) -> str:
    (root / "train" / "train_1.jpg").write_bytes(b"this is not a jpeg")
    return "train/train_1.jpg: error: not a decodable image"


def coco_image_size_mismatch(root: Path, b: SimpleNamespace) -> str:
    b.write_image(root / "train" / "train_2.jpg", width=80, height=48)
    return "train/train_2.jpg: error: image is 80x48 but the annotation file says 64x48"


def coco_box_zero_size(root: Path, b: SimpleNamespace) -> str:
    b.edit_json(_train_json(root), _first_ann("bbox", [4, 6, 0, 16]))
    return "train/_annotations.coco.json: error: annotation id 1 (image id 0): bbox [4, 6, 0, 16]"


def coco_box_negative_size(root: Path, b: SimpleNamespace) -> str:
    b.edit_json(_train_json(root), _first_ann("bbox", [4, 6, 10, -3]))
    return "has zero or negative size"


def coco_box_not_finite(root: Path, b: SimpleNamespace) -> str:
    b.edit_json(_train_json(root), _first_ann("bbox", [4, float("nan"), 10, 10]))
    return "train/_annotations.coco.json: error: annotation id 1 (image id 0): bbox [4, nan"


def coco_box_not_a_number(root: Path, b: SimpleNamespace) -> str:
    b.edit_json(_train_json(root), _first_ann("bbox", [4, "6", 10, 10]))
    return "bbox must be 4 numbers"


def coco_polygon_not_finite(root: Path, b: SimpleNamespace) -> str:
    polygon = [[4, 6, 24, 6, float("inf"), 22]]
    b.edit_json(_train_json(root), _first_ann("segmentation", polygon))
    return "train/_annotations.coco.json: error: annotation id 1 (image id 0): polygon has a"


def coco_category_not_declared(root: Path, b: SimpleNamespace) -> str:
    b.edit_json(_train_json(root), _first_ann("category_id", 7))
    return "category_id 7 is not declared"


def coco_duplicate_image_id(root: Path, b: SimpleNamespace) -> str:
    def edit(data: dict) -> None:
        data["images"][1]["id"] = data["images"][0]["id"]

    b.edit_json(_train_json(root), edit)
    return "train/_annotations.coco.json: error: image id 0 is used twice"


def coco_duplicate_annotation_id(root: Path, b: SimpleNamespace) -> str:
    b.edit_json(_train_json(root), _first_ann("id", 2))
    return "train/_annotations.coco.json: error: annotation id 2 is used twice"


def coco_split_without_images(root: Path, b: SimpleNamespace) -> str:
    def edit(data: dict) -> None:
        data["images"], data["annotations"] = [], []

    b.edit_json(root / "valid" / "_annotations.coco.json", edit)
    return "valid/_annotations.coco.json: error: the valid split has no images"


def coco_file_name_dotdot(root: Path, b: SimpleNamespace) -> str:
    def edit(data: dict) -> None:
        data["images"][0]["file_name"] = "../../secret.jpg"

    b.edit_json(_train_json(root), edit)
    return "train/_annotations.coco.json: error: image id 0: file name '../../secret.jpg'"


def coco_file_name_absolute(root: Path, b: SimpleNamespace) -> str:
    def edit(data: dict) -> None:
        data["images"][0]["file_name"] = "/etc/passwd"

    b.edit_json(_train_json(root), edit)
    return "is an absolute path"


def coco_symlink_outside(root: Path, b: SimpleNamespace) -> str:
    outside = root.parent / "outside.jpg"
    b.write_image(outside)
    image = root / "train" / "train_0.jpg"
    image.unlink()
    image.symlink_to(outside)
    return "train/train_0.jpg: error: image is a symlink that points outside the dataset folder"


def coco_missing_valid_split(root: Path, b: SimpleNamespace) -> str:
    for path in sorted((root / "valid").iterdir()):
        path.unlink()
    (root / "valid").rmdir()
    return "valid: error: the valid split is missing (looked for valid/ or val/)"


COCO_CASES: list[Mutation] = [
    coco_missing_annotation_file,
    coco_unreadable_annotation_file,
    coco_malformed_json,
    coco_image_missing,
    coco_image_not_decodable,
    coco_image_size_mismatch,
    coco_box_zero_size,
    coco_box_negative_size,
    coco_box_not_finite,
    coco_box_not_a_number,
    coco_polygon_not_finite,
    coco_category_not_declared,
    coco_duplicate_image_id,
    coco_duplicate_annotation_id,
    coco_split_without_images,
    coco_file_name_dotdot,
    coco_file_name_absolute,
    coco_symlink_outside,
    coco_missing_valid_split,
]


@pytest.mark.parametrize("mutate", COCO_CASES, ids=lambda f: f.__name__)
def test_coco_error_exits_2_and_names_the_file(
    coco_dir: Path, build: SimpleNamespace, capsys: pytest.CaptureFixture[str], mutate: Mutation
) -> None:
    expected = mutate(coco_dir, build)
    code, output = run_cli(capsys, str(coco_dir))
    assert code == 2
    assert expected in output, output
    assert "result: NOT usable" in output


def _label(root: Path, split: str = "train", index: int = 0) -> Path:
    return root / split / "labels" / f"{split}_{index}.txt"


def yolo_malformed_yaml(root: Path, b: SimpleNamespace) -> str:
    (root / "data.yaml").write_text("names: [cat, dog\nnc: 2\n")
    return "data.yaml: error: malformed YAML"


def yolo_names_missing(root: Path, b: SimpleNamespace) -> str:
    (root / "data.yaml").write_text("nc: 2\n")
    return "data.yaml: error: names: must be a list of class names or a {id: name} mapping"


def yolo_nc_mismatch(root: Path, b: SimpleNamespace) -> str:
    (root / "data.yaml").write_text("nc: 3\nnames: [cat, dog]\n")
    return "data.yaml: error: nc is 3 but names lists 2 classes"


def yolo_wrong_value_count(root: Path, b: SimpleNamespace) -> str:
    _label(root).write_text("0 0.5 0.5 0.2\n")
    return "train/labels/train_0.txt:1: error: 4 values; expected 5"


def yolo_value_outside_unit_range(root: Path, b: SimpleNamespace) -> str:
    _label(root).write_text("0 0.5 0.5 0.2 0.2\n1 0.5 1.5 0.2 0.2\n")
    return "train/labels/train_0.txt:2: error: value 1.5 is outside [0, 1]"


def yolo_value_not_finite(root: Path, b: SimpleNamespace) -> str:
    _label(root).write_text("0 0.5 nan 0.2 0.2\n")
    return "train/labels/train_0.txt:1: error: a coordinate is not a finite number"


def yolo_polygon_not_finite(root: Path, b: SimpleNamespace) -> str:
    _label(root).write_text("0 0.1 0.1 0.5 0.1 inf 0.5\n")
    return "train/labels/train_0.txt:1: error: a coordinate is not a finite number"


def yolo_value_not_a_number(root: Path, b: SimpleNamespace) -> str:
    _label(root).write_text("0 0.5 abc 0.2 0.2\n")
    return "train/labels/train_0.txt:1: error: value 'abc' is not a number"


def yolo_class_not_declared(root: Path, b: SimpleNamespace) -> str:
    _label(root, "valid").write_text("5 0.5 0.5 0.2 0.2\n")
    return "valid/labels/valid_0.txt:1: error: class id 5 is not declared"


def yolo_box_zero_size(root: Path, b: SimpleNamespace) -> str:
    _label(root).write_text("0 0.5 0.5 0 0.2\n")
    return "train/labels/train_0.txt:1: error: box has zero or negative size"


def yolo_image_not_decodable(root: Path, b: SimpleNamespace) -> str:
    (root / "train" / "images" / "train_2.png").write_bytes(b"\x89PNG broken")
    return "train/images/train_2.png: error: not a decodable image"


def yolo_split_without_images(root: Path, b: SimpleNamespace) -> str:
    for path in (root / "valid" / "images").iterdir():
        path.unlink()
    return "valid/images: error: the valid split has no images"


def yolo_symlink_outside(root: Path, b: SimpleNamespace) -> str:
    outside = root.parent / "elsewhere.png"
    b.write_image(outside)
    (root / "train" / "images" / "linked.png").symlink_to(outside)
    return "train/images/linked.png: error: image is a symlink that points outside"


def yolo_unreadable_label_file(root: Path, b: SimpleNamespace) -> str:
    _label(root).write_bytes(b"\xff\xfe\x00 bad bytes")
    return "train/labels/train_0.txt: error: label file is not UTF-8 text"


YOLO_CASES: list[Mutation] = [
    yolo_malformed_yaml,
    yolo_names_missing,
    yolo_nc_mismatch,
    yolo_wrong_value_count,
    yolo_value_outside_unit_range,
    yolo_value_not_finite,
    yolo_polygon_not_finite,
    yolo_value_not_a_number,
    yolo_class_not_declared,
    yolo_box_zero_size,
    yolo_image_not_decodable,
    yolo_split_without_images,
    yolo_symlink_outside,
    yolo_unreadable_label_file,
]


@pytest.mark.parametrize("mutate", YOLO_CASES, ids=lambda f: f.__name__)
def test_yolo_error_exits_2_and_names_the_file(
    yolo_dir: Path, build: SimpleNamespace, capsys: pytest.CaptureFixture[str], mutate: Mutation
) -> None:
    expected = mutate(yolo_dir, build)
    code, output = run_cli(capsys, str(yolo_dir))
    assert code == 2
    assert expected in output, output


@pytest.mark.parametrize("fixture", ["coco_dir", "coco_seg_dir", "yolo_dir", "yolo_seg_dir"])
def test_valid_dataset_exits_0(
    fixture: str, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = run_cli(capsys, str(request.getfixturevalue(fixture)))
    assert code == 0, output
    assert "problems: 0 error(s), 0 warning(s)" in output
    assert "result: usable" in output


def test_box_partly_outside_is_a_warning(
    coco_dir: Path, build: SimpleNamespace, capsys: pytest.CaptureFixture[str]
) -> None:
    build.edit_json(_train_json(coco_dir), _first_ann("bbox", [50, 6, 30, 16]))
    code, output = run_cli(capsys, str(coco_dir))
    assert code == 0
    assert "train/_annotations.coco.json: warning: annotation id 1 (image id 0)" in output
    assert "extends outside the 64x48 image; it is clipped" in output


def test_yolo_box_partly_outside_is_a_warning(
    yolo_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _label(yolo_dir).write_text("0 0.05 0.5 0.2 0.2\n")
    code, output = run_cli(capsys, str(yolo_dir))
    assert code == 0
    assert "train/labels/train_0.txt:1: warning: box extends outside the image" in output


def test_superclass_export_reports_real_classes(
    coco_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, output = run_cli(capsys, str(coco_dir), "--json")
    assert code == 0
    report = json.loads(output)
    assert report["format"] == "coco"
    assert [(c["id"], c["source_id"], c["name"]) for c in report["classes"]] == [
        (0, 1, "cat"),
        (1, 2, "dog"),
    ]
    assert report["classes"][0]["counts"] == {"train": 3 + 1, "valid": 2 + 1}  # + crowd
    assert report["skipped_classes"] == [{"source_id": 0, "name": "animals"}]
    assert report["splits"]["train"]["images"] == 3
    assert report["splits"]["train"]["crowd"] == 1

    code, text = run_cli(capsys, str(coco_dir))
    assert "skipped: category id 0 'animals'" in text
    assert "animals" not in text.split("skipped:")[0]


def test_not_a_dataset_lists_what_was_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "notes.txt").write_text("hi")
    code, output = run_cli(capsys, str(tmp_path))
    assert code == 2
    assert "looked for COCO (train/_annotations.coco.json) and YOLO" in output
    assert "found: images/ (empty), notes.txt" in output


def test_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, output = run_cli(capsys, str(tmp_path / "nope"))
    assert code == 2
    assert f"{tmp_path / 'nope'}: error: no such dataset folder" in output


@pytest.mark.parametrize("uri", ["s3://datasets/shapes", "https://example.com/shapes.zip"])
def test_a_uri_is_named_as_typed(uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``Path`` folds ``//``: the message once read ``s3:/datasets/shapes: no such folder``."""
    code, output = run_cli(capsys, uri)
    assert code == 2
    assert f"{uri}: error: a URI; give a local dataset folder" in output


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate"]) == 2
    assert main(["no-such-command"]) == 2
    capsys.readouterr()


def test_python_dash_m_entry_point(coco_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rfdetr", "validate", str(coco_dir), "--json"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["usable"] is True
