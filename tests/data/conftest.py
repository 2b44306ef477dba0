"""Small COCO and YOLO datasets written into tmp_path, for the data tests.

Images are 64x48 (w x h) with a distinct left/right pattern so flips are visible. The COCO
export is Roboflow-style: category 0 ``animals`` is a superclass (supercategory ``none``, no
annotations); ``cat`` (id 1) and ``dog`` (id 2) are the real classes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

WIDTH, HEIGHT = 64, 48

CATEGORIES = [
    {"id": 0, "name": "animals", "supercategory": "none"},
    {"id": 1, "name": "cat", "supercategory": "animals"},
    {"id": 2, "name": "dog", "supercategory": "animals"},
]


def write_image(path: Path, width: int = WIDTH, height: int = HEIGHT, seed: int = 0) -> None:
    """A JPEG/PNG (by suffix) whose left half is dark and right half bright, plus noise."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 40, size=(height, width, 3), dtype=np.uint8)
    array[:, width // 2 :] += 200
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _coco_split(split: str, count: int, segmentation: bool) -> dict[str, Any]:
    images, annotations = [], []
    for i in range(count):
        images.append({"id": i, "file_name": f"{split}_{i}.jpg", "width": WIDTH, "height": HEIGHT})
        boxes = [(1, [4.0, 6.0, 20.0, 16.0]), (2, [30.0, 20.0, 24.0, 20.0])]
        for category, (x, y, w, h) in boxes:
            ann: dict[str, Any] = {
                "id": len(annotations) + 1,
                "image_id": i,
                "category_id": category,
                "bbox": [x, y, w, h],
                "area": w * h,
                "iscrowd": 0,
            }
            if segmentation:
                # A triangle inside the box: its mask is smaller than the box.
                ann["segmentation"] = [[x, y, x + w, y, x, y + h]]
            annotations.append(ann)
    # A crowd region on image 0: evaluation keeps it, training targets do not.
    crowd_mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8, order="F")
    crowd_mask[30:40, 2:12] = 1
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(crowd_mask)
    annotations.append(
        {
            "id": len(annotations) + 1,
            "image_id": 0,
            "category_id": 1,
            "bbox": [2.0, 30.0, 10.0, 10.0],
            "area": 100.0,
            "iscrowd": 1,
            "segmentation": {"size": [HEIGHT, WIDTH], "counts": rle["counts"].decode()},
        }
    )
    return {"images": images, "annotations": annotations, "categories": CATEGORIES}


def make_coco(root: Path, segmentation: bool = False, counts: dict[str, int] | None = None) -> Path:
    """Write a COCO dataset (train 3 images, valid 2) and return its folder."""
    for split, count in (counts or {"train": 3, "valid": 2}).items():
        data = _coco_split(split, count, segmentation)
        for image in data["images"]:
            write_image(root / split / image["file_name"], seed=image["id"])
        write_json(root / split / "_annotations.coco.json", data)
    return root


def make_yolo(root: Path, segmentation: bool = False, yaml_name: str = "data.yaml") -> Path:
    """Write a YOLO dataset (train 3 images, valid 2) and return its folder.

    Image 0 has a box and (for segmentation) a polygon line, image 1 an empty label file, image 2
    no label file at all.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / yaml_name).write_text("nc: 2\nnames: [cat, dog]\n")
    for split, count in (("train", 3), ("valid", 2)):
        for i in range(count):
            write_image(root / split / "images" / f"{split}_{i}.png", seed=i)
        labels = root / split / "labels"
        labels.mkdir(parents=True)
        lines = ["0 0.21875 0.291667 0.3125 0.333333"]  # the COCO cat box [4, 6, 20, 16] normalised
        if segmentation:
            lines.append("1 0.46875 0.416667 0.84375 0.416667 0.46875 0.833333")  # triangle
        else:
            lines.append("1 0.65625 0.625 0.375 0.416667")
        (labels / f"{split}_0.txt").write_text("\n".join(lines) + "\n")
        (labels / f"{split}_1.txt").write_text("")
    return root


def read_json(path: Path) -> dict[str, Any]:
    """Load a JSON file."""
    return json.loads(path.read_text())


def write_json(path: Path, data: Any) -> None:
    """Write a JSON file (NaN allowed, as some exporters write it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def edit_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``edit`` to the JSON in ``path`` in place."""
    data = read_json(path)
    edit(data)
    write_json(path, data)


@pytest.fixture
def coco_dir(tmp_path: Path) -> Path:
    """A valid COCO detection dataset with a Roboflow superclass."""
    return make_coco(tmp_path / "coco")


@pytest.fixture
def coco_seg_dir(tmp_path: Path) -> Path:
    """A valid COCO segmentation dataset (polygons, plus an RLE crowd region)."""
    return make_coco(tmp_path / "coco_seg", segmentation=True)


@pytest.fixture
def yolo_dir(tmp_path: Path) -> Path:
    """A valid YOLO detection dataset."""
    return make_yolo(tmp_path / "yolo")


@pytest.fixture
def yolo_seg_dir(tmp_path: Path) -> Path:
    """A valid YOLO segmentation dataset (one polygon line per labelled image)."""
    return make_yolo(tmp_path / "yolo_seg", segmentation=True)


@pytest.fixture
def build() -> SimpleNamespace:
    """The dataset-writing helpers, for tests that need a variant of the standard datasets."""
    return SimpleNamespace(
        make_coco=make_coco,
        make_yolo=make_yolo,
        write_image=write_image,
        read_json=read_json,
        write_json=write_json,
        edit_json=edit_json,
        width=WIDTH,
        height=HEIGHT,
    )
