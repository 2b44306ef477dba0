"""Hostile dataset files: every one is a one-line problem in `rfdetr validate` (exit 2), never a
crash, a traceback, a hang or a blow-up of memory (issue 13)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hostile_helpers import run_limited, run_python_limited

from rfdetr.data.validation import validate_dataset

VALIDATE_MEMORY_MB = 1500  # validate imports no torch: this is a generous bound


def _train_json(root: Path) -> Path:
    return root / "train" / "_annotations.coco.json"


def _validate_cli(root: Path, *extra: str, memory_mb: int = VALIDATE_MEMORY_MB) -> str:
    """``rfdetr validate ROOT`` under a memory cap: exit 2, no traceback; returns the output."""
    result = run_limited(["validate", str(root), *extra], address_space_mb=memory_mb)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-2000:]
    assert "Traceback" not in output
    return output


def _errors(root: Path, **kwargs: Any) -> list[str]:
    report = validate_dataset(root, **kwargs)
    assert not report.usable
    return [str(p) for p in report.errors]


def _set_first(section: str, key: str, value: Any) -> Any:
    def edit(data: dict[str, Any]) -> None:
        data[section][0][key] = value

    return edit


@pytest.mark.parametrize("coordinate", [1e9, 1e300, 1e8, -1e8])
def test_polygon_far_outside_the_image_is_an_error(
    tmp_path: Path, build: SimpleNamespace, coordinate: float
) -> None:
    root = build.make_coco(tmp_path / "d", segmentation=True)
    build.edit_json(
        _train_json(root), _set_first("annotations", "segmentation", [[1, 1, coordinate, 2, 3, 9]])
    )
    output = _validate_cli(root)
    assert "far outside the 64x48 image" in output and "_annotations.coco.json" in output


@pytest.mark.parametrize("coordinate", [1e9, 1e300, 1e8])
def test_mask_code_refuses_far_polygons_before_pycocotools(coordinate: float) -> None:
    code = (
        "from rfdetr.data.masks import polygons_to_mask\n"
        "try:\n"
        f"    polygons_to_mask([[1.0, 1.0, {coordinate!r}, 2.0, 3.0, 9.0]], 48, 64)\n"
        "except ValueError as exc:\n"
        "    print('refused:', exc)\n"
    )
    result = run_python_limited(code, address_space_mb=VALIDATE_MEMORY_MB)
    assert result.returncode == 0 and "refused:" in result.stdout, result.stderr[-500:]


@pytest.mark.parametrize(
    ("rle", "message"),
    [
        ({"size": [48, 64], "counts": "\x7f\x7f\x7f~~~"}, "RLE counts"),
        ({"size": [48, 64], "counts": "ooooooooooooooo"}, "RLE counts"),
        ({"size": [48, 64], "counts": "0"}, "RLE counts"),
        ({"size": [48, 64], "counts": [0, 10**12]}, "RLE counts"),
        ({"size": [48, 64], "counts": [1, -5, 3072]}, "RLE counts"),
    ],
)
def test_bad_rle_is_an_error_in_validation_and_in_the_mask_code(
    tmp_path: Path, build: SimpleNamespace, rle: dict[str, Any], message: str
) -> None:
    root = build.make_coco(tmp_path / "d", segmentation=True)
    build.edit_json(_train_json(root), _set_first("annotations", "segmentation", rle))
    assert any(message in e for e in _errors(root))
    code = (
        "from rfdetr.data.masks import coco_segmentation_to_mask\n"
        "try:\n"
        f"    coco_segmentation_to_mask({rle!r}, 48, 64, [0, 0, 4, 4])\n"
        "except ValueError as exc:\n"
        "    print('refused:', exc)\n"
    )
    result = run_python_limited(code, address_space_mb=VALIDATE_MEMORY_MB)
    assert result.returncode == 0 and "refused:" in result.stdout, result.stderr[-500:]


def test_rle_counts_checker_agrees_with_pycocotools_on_real_masks() -> None:
    from pycocotools import mask as mask_utils

    from rfdetr.data.masks import coco_segmentation_to_mask

    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = np.asfortranarray(rng.random((30, 41)) > rng.random())
        rle = mask_utils.encode(mask.astype(np.uint8))
        rle = {"size": rle["size"], "counts": rle["counts"].decode()}
        assert np.array_equal(coco_segmentation_to_mask(rle, 30, 41, [0, 0, 1, 1]), mask)


def _alias_bomb(levels: int = 9, fanout: int = 9) -> str:
    lines = ["a0: &a0 [x]"]
    for level in range(1, levels):
        refs = ", ".join([f"*a{level - 1}"] * fanout)
        lines.append(f"a{level}: &a{level} [{refs}]")
    lines.append(f"names: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def test_yaml_alias_bomb_is_refused_before_expansion(
    tmp_path: Path, build: SimpleNamespace
) -> None:
    root = build.make_yolo(tmp_path / "d")
    (root / "data.yaml").write_text(_alias_bomb())
    output = _validate_cli(root)
    assert "data.yaml" in output and "alias" in output


@pytest.mark.parametrize(
    "names", ["[[a, b], {x: 1}, null]", "[cat, null]", "[cat, 1.5]", "{0: [a], 1: dog}", "[yes]"]
)
def test_yaml_names_that_are_not_strings_are_refused(
    tmp_path: Path, build: SimpleNamespace, names: str
) -> None:
    root = build.make_yolo(tmp_path / "d")
    (root / "data.yaml").write_text(f"names: {names}\n")
    assert any("data.yaml" in e and "names" in e for e in _errors(root))


def test_yaml_nested_very_deep_is_an_error(tmp_path: Path, build: SimpleNamespace) -> None:
    root = build.make_yolo(tmp_path / "d")
    (root / "data.yaml").write_text("names: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert "data.yaml" in _validate_cli(root)


@pytest.mark.parametrize(
    ("section", "key"),
    [("images", "id"), ("images", "width"), ("annotations", "id"), ("annotations", "category_id")],
)
def test_integers_beyond_64_bits_are_errors(
    tmp_path: Path, build: SimpleNamespace, section: str, key: str
) -> None:
    root = build.make_coco(tmp_path / "d")
    build.edit_json(_train_json(root), _set_first(section, key, 2**64))
    assert any("_annotations.coco.json" in e for e in _errors(root))


def test_category_id_beyond_64_bits_is_an_error(tmp_path: Path, build: SimpleNamespace) -> None:
    root = build.make_coco(tmp_path / "d")
    build.edit_json(_train_json(root), _set_first("categories", "id", 2**64))
    assert any("_annotations.coco.json" in e for e in _errors(root))


def test_json_nested_100000_deep_is_an_error(tmp_path: Path, build: SimpleNamespace) -> None:
    root = build.make_coco(tmp_path / "d")
    _train_json(root).write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert "nested too deeply" in _validate_cli(root)


def test_nul_in_file_name_is_an_error(tmp_path: Path, build: SimpleNamespace) -> None:
    root = build.make_coco(tmp_path / "d")
    build.edit_json(_train_json(root), _set_first("images", "file_name", "a\x00.jpg"))
    assert any("NUL" in e for e in _errors(root))


@pytest.mark.parametrize("token", ["1e20", "-1", "9223372036854775808"])
def test_yolo_class_out_of_range_is_an_error(
    tmp_path: Path, build: SimpleNamespace, token: str
) -> None:
    root = build.make_yolo(tmp_path / "d")
    (root / "data.yaml").write_text("names: {0: cat, 1: dog}\n")
    (root / "train" / "labels" / "train_1.txt").write_text(f"{token} 0.5 0.5 0.2 0.2\n")
    assert any("train_1.txt:1" in e for e in _errors(root))
    (root / "data.yaml").write_text("names: not-a-list\n")  # no class map: ids still bounded
    assert any("train_1.txt:1" in e for e in _errors(root))


def test_fifo_named_like_an_image_is_refused_without_hanging(
    tmp_path: Path, build: SimpleNamespace
) -> None:
    root = build.make_yolo(tmp_path / "d")
    fifo = root / "train" / "images" / "train_0.png"
    fifo.unlink()
    os.mkfifo(fifo)
    assert "train_0.png: error: not a regular file" in _validate_cli(root)


def test_fifo_as_label_and_annotation_file_is_refused(
    tmp_path: Path, build: SimpleNamespace
) -> None:
    yolo = build.make_yolo(tmp_path / "y")
    label = yolo / "train" / "labels" / "train_0.txt"
    label.unlink()
    os.mkfifo(label)
    assert _has_line(_validate_cli(yolo), "train_0.txt: error:", "not a regular file")
    coco = build.make_coco(tmp_path / "c")
    _train_json(coco).unlink()
    os.mkfifo(_train_json(coco))
    assert _has_line(_validate_cli(coco), "_annotations.coco.json: error:", "not a regular file")


def _has_line(output: str, *parts: str) -> bool:
    return any(all(part in line for part in parts) for line in output.splitlines())


def test_too_many_classes_is_a_clear_error(tmp_path: Path, build: SimpleNamespace) -> None:
    from rfdetr.data.classes import MAX_CLASSES

    root = build.make_yolo(tmp_path / "y")
    (root / "data.yaml").write_text(f"names: [{', '.join(['c'] * (MAX_CLASSES + 1))}]\n")
    assert any(f"at most {MAX_CLASSES}" in e for e in _errors(root))
    (root / "data.yaml").write_text(f"names: [{', '.join(['c'] * 200_000)}]\n")
    assert any("data.yaml: error: more than" in e for e in _errors(root))  # refused unbuilt
    coco = build.make_coco(tmp_path / "c")
    categories = [{"id": i, "name": f"c{i}"} for i in range(200_000)]
    build.edit_json(_train_json(coco), lambda d: d.update(categories=categories))
    assert any(f"at most {MAX_CLASSES}" in e for e in _errors(coco))


def test_control_characters_in_file_names_cannot_forge_report_lines(
    tmp_path: Path, build: SimpleNamespace
) -> None:
    root = build.make_yolo(tmp_path / "d")
    forged = "x\nresult: usable\r\x1b[2K"
    build.write_image(root / "train" / "images" / f"{forged}.png")
    (root / "train" / "labels" / f"{forged}.txt").write_text("7 0.5 0.5 0.2 0.2\n")
    output = _validate_cli(root)
    lines = output.splitlines()
    assert "result: usable" not in lines and not any(line.startswith("\x1b") for line in lines)
    assert "\r" not in output and "\x1b" not in output


@pytest.mark.parametrize("fmt", ["coco", "yolo"])
def test_class_names_with_control_characters_are_errors(
    tmp_path: Path, build: SimpleNamespace, fmt: str
) -> None:
    forged = "cat\nresult: usable"
    if fmt == "coco":
        root = build.make_coco(tmp_path / "d")
        build.edit_json(_train_json(root), lambda d: d["categories"][1].update(name=forged))
    else:
        root = build.make_yolo(tmp_path / "d")
        (root / "data.yaml").write_text('names: ["cat\\nresult: usable", dog]\n')
    assert any("control characters" in e for e in _errors(root))
