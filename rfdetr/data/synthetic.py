"""A seeded generator of small "shapes" datasets in COCO or YOLO layout, for tests and demos.

Each image has a noisy background and a few non-overlapping filled shapes, each written as its
polygon (detection and segmentation alike). COCO follows a Roboflow export (superclass id 0,
classes 1..N). The same ``seed`` always writes the same files, byte for byte.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle")
# A base colour per class (RGB); each object jitters it, so colour helps but is not exact.
_CLASS_COLOURS = ((220, 60, 50), (50, 170, 70), (60, 90, 220), (230, 200, 40), (170, 60, 200))


@dataclass(frozen=True)
class ShapeObject:
    """One drawn object: 0-based class and its polygon in pixels ``[(x, y), ...]``."""

    label: int
    polygon: list[tuple[float, float]]

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        xs, ys = zip(*self.polygon, strict=True)
        return min(xs), min(ys), max(xs), max(ys)

    @property
    def area(self) -> float:
        # The shoelace formula.
        pts = self.polygon
        twice = sum(
            x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(pts, pts[1:] + pts[:1], strict=True)
        )
        return abs(twice) / 2.0


def make_shapes_dataset(
    root: str | Path,
    *,
    fmt: Literal["coco", "yolo"] = "coco",
    segmentation: bool = False,
    splits: Mapping[str, int] | None = None,
    image_size: int | tuple[int, int] = 128,
    objects_per_image: tuple[int, int] = (1, 3),
    object_scale: tuple[float, float] = (0.2, 0.45),
    classes: Sequence[str] = SHAPE_CLASSES,
    seed: int = 0,
) -> Path:
    """Write a shapes dataset under ``root`` and return ``root``.

    Args:
        root: destination folder (created).
        fmt: ``coco`` (Roboflow layout, ``_annotations.coco.json`` per split) or ``yolo``.
        segmentation: YOLO only: write polygon label lines instead of boxes. COCO annotations
            always carry the polygon ``segmentation``.
        splits: images per split; default ``{"train": 32, "valid": 8}``.
        image_size: square side in pixels, or ``(min, max)`` for random widths and heights.
        objects_per_image: inclusive range of objects per image (fewer when they do not fit).
        object_scale: inclusive range of an object's size as a fraction of the shorter side.
        classes: class names; shapes cycle through circle, square, triangle.
        seed: the random seed; the same seed gives the same files.
    """
    if not classes or len(classes) > len(_CLASS_COLOURS):
        raise ValueError(f"between 1 and {len(_CLASS_COLOURS)} classes are supported")
    if fmt not in ("coco", "yolo"):
        raise ValueError(f"unknown format '{fmt}'; use 'coco' or 'yolo'")
    root = Path(root)
    splits = dict(splits or {"train": 32, "valid": 8})
    if fmt == "yolo":
        _write_data_yaml(root, classes, splits)
    for index, (split, count) in enumerate(splits.items()):
        rng = np.random.default_rng([seed, index])
        images = [
            _draw_image(rng, image_size, objects_per_image, object_scale, len(classes))
            for _ in range(count)
        ]
        if fmt == "coco":
            _write_coco_split(root / split, split, images, classes)
        else:
            _write_yolo_split(root / split, split, images, segmentation)
    return root


def _draw_image(
    rng: np.random.Generator,
    image_size: int | tuple[int, int],
    objects_per_image: tuple[int, int],
    object_scale: tuple[float, float],
    num_classes: int,
) -> tuple[Image.Image, list[ShapeObject]]:
    if isinstance(image_size, int):
        width = height = image_size
    else:
        width, height = (int(v) for v in rng.integers(image_size[0], image_size[1] + 1, size=2))
    grey = int(rng.integers(90, 170))
    pixels = rng.normal(grey, 12, size=(height, width, 3)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    placed: list[ShapeObject] = []
    wanted = int(rng.integers(objects_per_image[0], objects_per_image[1] + 1))
    for _ in range(wanted * 10):  # a few attempts per object to find a free spot
        if len(placed) == wanted:
            break
        label = int(rng.integers(num_classes))
        side = float(rng.uniform(*object_scale)) * min(width, height)
        cx = float(rng.uniform(side / 2, width - side / 2))
        cy = float(rng.uniform(side / 2, height - side / 2))
        candidate = ShapeObject(label, _polygon(label, cx, cy, side, rng))
        if any(_overlap(candidate.xyxy, other.xyxy) for other in placed):
            continue
        jitter = rng.integers(-25, 26, size=3)
        colour = tuple(int(c) for c in np.clip(np.array(_CLASS_COLOURS[label]) + jitter, 0, 255))
        draw.polygon(candidate.polygon, fill=colour)
        placed.append(candidate)
    return image, placed


def _polygon(
    label: int, cx: float, cy: float, side: float, rng: np.random.Generator
) -> list[tuple[float, float]]:
    """Vertices of the class's shape: circle (24-gon), square-ish rectangle, or triangle."""
    half = side / 2
    shape = label % 3
    if shape == 0:
        return [
            (cx + half * math.cos(2 * math.pi * k / 24), cy + half * math.sin(2 * math.pi * k / 24))
            for k in range(24)
        ]
    if shape == 1:
        aspect = float(rng.uniform(0.75, 1.0))
        w, h = (half, half * aspect) if rng.random() < 0.5 else (half * aspect, half)
        return [(cx - w, cy - h), (cx + w, cy - h), (cx + w, cy + h), (cx - w, cy + h)]
    return [(cx, cy - half), (cx + half, cy + half), (cx - half, cy + half)]


def _overlap(a: tuple[float, ...], b: tuple[float, ...], margin: float = 2.0) -> bool:
    return not (
        a[2] + margin < b[0] or b[2] + margin < a[0] or a[3] + margin < b[1] or b[3] + margin < a[1]
    )


def _write_coco_split(
    folder: Path,
    split: str,
    images: list[tuple[Image.Image, list[ShapeObject]]],
    classes: Sequence[str],
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    categories = [{"id": 0, "name": "shapes", "supercategory": "none"}]
    categories += [
        {"id": i + 1, "name": name, "supercategory": "shapes"} for i, name in enumerate(classes)
    ]
    records, annotations = [], []
    for image_id, (image, objects) in enumerate(images):
        name = f"{split}_{image_id:05d}.jpg"
        image.save(folder / name, quality=95)
        records.append(
            {"id": image_id, "file_name": name, "width": image.width, "height": image.height}
        )
        for obj in objects:
            x1, y1, x2, y2 = obj.xyxy
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": obj.label + 1,
                    "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                    "area": round(obj.area, 2),
                    "segmentation": [[round(v, 2) for point in obj.polygon for v in point]],
                    "iscrowd": 0,
                }
            )
    data = {"images": records, "annotations": annotations, "categories": categories}
    (folder / "_annotations.coco.json").write_text(json.dumps(data))


def _write_yolo_split(
    folder: Path,
    split: str,
    images: list[tuple[Image.Image, list[ShapeObject]]],
    segmentation: bool,
) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    for image_id, (image, objects) in enumerate(images):
        stem = f"{split}_{image_id:05d}"
        image.save(folder / "images" / f"{stem}.jpg", quality=95)
        lines = [_yolo_line(obj, image.width, image.height, segmentation) for obj in objects]
        (folder / "labels" / f"{stem}.txt").write_text("".join(f"{line}\n" for line in lines))


def _yolo_line(obj: ShapeObject, width: int, height: int, segmentation: bool) -> str:
    if segmentation:
        coords = [f"{x / width:.6f} {y / height:.6f}" for x, y in obj.polygon]
        return f"{obj.label} " + " ".join(coords)
    x1, y1, x2, y2 = obj.xyxy
    box = ((x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height)
    return f"{obj.label} " + " ".join(f"{v:.6f}" for v in box)


def _write_data_yaml(root: Path, classes: Sequence[str], splits: Mapping[str, int]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    lines = [f"path: {root.resolve()}"]
    lines += [f"{'val' if s == 'valid' else s}: {s}/images" for s in splits]
    lines += [f"nc: {len(classes)}", "names: [" + ", ".join(classes) + "]"]
    (root / "data.yaml").write_text("\n".join(lines) + "\n")
