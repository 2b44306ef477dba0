"""Hand-made ground truth and predictions for the evaluation tests, and tiny dataset folders.

``fixed_case`` is deterministic: 6 images (one without objects), 3 classes (the third never
annotated), boxes of every COCO area range, a crowd region, jittered true positives, false
positives and misses, with polygon ground truth and RLE predicted masks.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from rfdetr.evaluation.predictions import ImagePredictions, encode_masks

WIDTH, HEIGHT = 200, 160


def polygon(x: float, y: float, w: float, h: float) -> list[float]:
    """A pentagon inside the box, so masks differ from boxes."""
    return [x, y + h / 2, x + w / 2, y, x + w, y + h / 3, x + w * 0.8, y + h, x + w * 0.2, y + h]


def rasterize(poly: list[float], width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """bool ``[H, W]`` mask of one polygon."""
    rle = mask_utils.merge(mask_utils.frPyObjects([poly], height, width))
    return mask_utils.decode(rle).astype(bool)


def _annotation(
    ann_id: int,
    image_id: int,
    label: int,
    bbox: list[float],
    area: float,
    segmentation: Any,
    crowd: int = 0,
) -> dict[str, Any]:
    """A COCO annotation (``segmentation``: polygons, or an RLE region when ``crowd``)."""
    return {"id": ann_id, "image_id": image_id, "category_id": label, "bbox": bbox,
            "area": area, "iscrowd": crowd, "segmentation": segmentation}  # fmt: skip


def make_fixed_case() -> tuple[dict[str, Any], list[ImagePredictions]]:
    """(COCO ground truth with 0-based ids and source ids, predictions with masks)."""
    rng = np.random.default_rng(7)
    categories = [
        {"id": 0, "name": "cat", "source_id": 3},
        {"id": 1, "name": "dog", "source_id": 7},
        {"id": 2, "name": "bird", "source_id": 9},
    ]
    images, annotations, predictions = [], [], []
    sizes = [(6, 5), (12, 9), (30, 25), (60, 50), (110, 90), (20, 40)]
    for image_id in range(6):
        images.append(
            {"id": image_id, "file_name": f"{image_id}.jpg", "width": WIDTH, "height": HEIGHT}
        )
        boxes, labels, scores, masks = [], [], [], []
        count = 0 if image_id == 5 else 2 + image_id % 3
        for j in range(count):
            w, h = sizes[(image_id + j) % len(sizes)]
            x, y = float(rng.uniform(0, WIDTH - w)), float(rng.uniform(0, HEIGHT - h))
            label = int((image_id + j) % 2)
            poly = polygon(x, y, w, h)
            bbox, area = [x, y, float(w), float(h)], float(rasterize(poly).sum())
            annotations.append(
                _annotation(len(annotations) + 1, image_id, label, bbox, area, [poly])
            )
            if j == 2:  # a miss
                continue
            dx, dy = rng.normal(0, max(w, h) * 0.08, size=2)
            wrong = image_id == 3 and j == 1
            boxes.append([x + dx, y + dy, x + dx + w, y + dy + h])
            labels.append(1 - label if wrong else label)
            scores.append(float(rng.uniform(0.3, 0.99)))
            masks.append(rasterize(polygon(x + dx, y + dy, w, h)))
        for _ in range(2):  # false positives
            w, h = float(rng.uniform(8, 60)), float(rng.uniform(8, 60))
            x, y = float(rng.uniform(0, WIDTH - w)), float(rng.uniform(0, HEIGHT - h))
            boxes.append([x, y, x + w, y + h])
            labels.append(int(rng.integers(0, 3)))
            scores.append(float(rng.uniform(0.01, 0.6)))
            masks.append(rasterize(polygon(x, y, w, h)))
        order = np.argsort(-np.asarray(scores), kind="stable")
        predictions.append(
            ImagePredictions(
                index=image_id,
                image_id=image_id,
                height=HEIGHT,
                width=WIDTH,
                scores=np.asarray(scores, dtype=np.float32)[order],
                labels=np.asarray(labels, dtype=np.int64)[order],
                boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4)[order],
                masks=encode_masks(np.stack(masks)[order]),
            )
        )
    crowd = np.zeros((HEIGHT, WIDTH), dtype=np.uint8, order="F")
    crowd[100:150, 10:70] = 1
    rle = mask_utils.encode(crowd)
    region = {"size": [HEIGHT, WIDTH], "counts": rle["counts"].decode()}
    bbox = [10.0, 100.0, 60.0, 50.0]
    annotations.append(_annotation(len(annotations) + 1, 0, 0, bbox, 3000.0, region, crowd=1))
    return {"images": images, "annotations": annotations, "categories": categories}, predictions


@pytest.fixture
def fixed_case() -> tuple[dict[str, Any], list[ImagePredictions]]:
    """See :func:`make_fixed_case`."""
    return make_fixed_case()


def write_coco_dataset(
    root: Path,
    splits: dict[str, int],
    *,
    categories: list[dict[str, Any]] | None = None,
    segmentation: bool = False,
) -> Path:
    """A Roboflow-style COCO folder (superclass id 0; ``cat`` id 1, ``dog`` id 2 by default).

    Every image (64 x 64) holds a cat on the left and a dog on the right.
    """
    categories = categories or [
        {"id": 0, "name": "pets", "supercategory": "none"},
        {"id": 1, "name": "cat", "supercategory": "pets"},
        {"id": 2, "name": "dog", "supercategory": "pets"},
    ]
    real = [c["id"] for c in categories if c.get("supercategory") != "none"]
    for split, count in splits.items():
        images, annotations = [], []
        for i in range(count):
            name = f"{split}_{i}.jpg"
            rng = np.random.default_rng(i)
            pixels = rng.integers(0, 60, size=(64, 64, 3), dtype=np.uint8)
            pixels[8:30, 4:28] = (220, 120, 40)
            pixels[30:58, 34:60] = (40, 90, 220)
            (root / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / split / name)
            images.append({"id": i + 1, "file_name": name, "width": 64, "height": 64})
            for category, (x, y, w, h) in zip(
                real, [(4, 8, 24, 22), (34, 30, 26, 28)], strict=False
            ):
                ann = {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": category,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
                if segmentation:
                    ann["segmentation"] = [polygon(x, y, w, h)]
                annotations.append(ann)
        data = {"images": images, "annotations": annotations, "categories": categories}
        (root / split / "_annotations.coco.json").write_text(json.dumps(data))
    return root


@pytest.fixture
def seg_dataset(tmp_path: Path):
    """The validation split (3 images) of a COCO segmentation folder, at the tiny resolution."""
    from rfdetr.config import get_preset
    from rfdetr.data import build_dataset

    root = write_coco_dataset(tmp_path / "seg", {"train": 2, "valid": 3}, segmentation=True)
    resolution = get_preset("tiny-seg").resolution
    return build_dataset(root, "valid", resolution, train=False, segmentation=True)


@pytest.fixture
def tiny_seg_model():
    """(random tiny-seg RFDETR for 2 classes, its PostProcess)."""
    from rfdetr.config import get_preset
    from rfdetr.models.build import build_model
    from rfdetr.models.postprocess import PostProcess

    config = get_preset("tiny-seg").with_overrides(num_classes=2)
    return build_model(config), PostProcess(config.num_select)


def save_tiny_checkpoint(
    path: Path, *, segmentation: bool = False, class_names: list[str] | None = None, **config: Any
) -> Path:
    """A random-weight checkpoint of the ``tiny`` (or ``tiny-seg``) preset in our format."""
    from rfdetr.checkpoints import save_checkpoint
    from rfdetr.config import get_preset
    from rfdetr.models.build import build_model

    names = ["cat", "dog"] if class_names is None else class_names
    preset = get_preset("tiny-seg" if segmentation else "tiny")
    model_config = preset.with_overrides(num_classes=len(names) or 2, **config)
    torch.manual_seed(0)
    model = build_model(model_config)
    save_checkpoint(
        path,
        model.state_dict(),
        config=model_config.model_dump(mode="json"),
        class_names=names or None,
        epoch=0,
        metrics={},
    )
    return path


@pytest.fixture(scope="module")
def evaluated_seg(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``rfdetr.evaluate`` of a tiny-seg checkpoint with a report, shared by a module's tests."""
    from rfdetr.evaluation.api import evaluate

    root = tmp_path_factory.mktemp("evaluated_seg")
    dataset = write_coco_dataset(root / "data", {"train": 1, "valid": 4}, segmentation=True)
    checkpoint = save_tiny_checkpoint(root / "seg.pth", segmentation=True)
    result = evaluate(checkpoint, dataset, output_dir=root / "report", device="cpu")
    return {"result": result, "report": root / "report", "dataset": dataset}


@pytest.fixture
def helpers() -> SimpleNamespace:
    """The dataset and checkpoint writers, for tests that need their own variant."""
    return SimpleNamespace(
        write_coco_dataset=write_coco_dataset,
        save_tiny_checkpoint=save_tiny_checkpoint,
        make_fixed_case=make_fixed_case,
    )
