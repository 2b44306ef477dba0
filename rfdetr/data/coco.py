"""Read and check one COCO annotation file (``<split>/_annotations.coco.json``), for validation
and the loader alike. Annotations are flat numpy arrays, not one dict each, so DataLoader
workers do not copy a Python object graph per item.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rfdetr.data.classes import too_many_classes
from rfdetr.data.images import PIXEL_LIMIT_ENV, max_image_pixels, open_regular, unsafe_name_reason
from rfdetr.data.masks import polygon_problem, rle_problem
from rfdetr.data.problems import ProblemLog

# Boxes that overhang the image by less than this many pixels are rounding noise, not a warning.
OVERHANG_TOLERANCE_PX = 0.5
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass
class CocoSplit:
    """The checked contents of one COCO file. Entries with errors are left out.

    Attributes:
        json_path: the annotation file.
        categories: ``{"id", "name", "supercategory"}`` dicts, as declared.
        image_ids, widths, heights: int64 ``[I]``.
        file_names: ``[I]`` names relative to the split folder.
        ann_offsets: int64 ``[I+1]``; image ``i`` owns annotations
            ``ann_offsets[i] : ann_offsets[i+1]``.
        ann_ids, ann_category_ids: int64 ``[A]`` (category ids as in the file).
        ann_boxes: float64 ``[A, 4]`` pixel ``[x, y, w, h]`` as written (not clipped).
        ann_iscrowd: bool ``[A]``; ann_area: float64 ``[A]``.
        segmentations: ``[A]`` raw COCO segmentations (polygons, RLE or None); only when asked for.
    """

    json_path: Path
    categories: list[dict[str, Any]]
    image_ids: np.ndarray
    file_names: np.ndarray
    widths: np.ndarray
    heights: np.ndarray
    ann_offsets: np.ndarray
    ann_ids: np.ndarray
    ann_category_ids: np.ndarray
    ann_boxes: np.ndarray
    ann_iscrowd: np.ndarray
    ann_area: np.ndarray
    segmentations: list[Any] | None = None

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    def annotated_category_ids(self) -> set[int]:
        return {int(c) for c in np.unique(self.ann_category_ids)}


def read_coco_split(
    json_path: Path, log: ProblemLog, *, keep_segmentation: bool = False
) -> CocoSplit | None:
    """Parse and check a COCO annotation file; every problem goes to ``log``. Returns the split
    without its faulty entries, or None when the file itself is unusable."""
    data = _load_json(json_path, log)
    if data is None:
        return None
    categories = _read_categories(data, json_path, log)
    images, bad_image_ids = _read_images(data, json_path, log)
    raw_annotations = data.get("annotations")
    if raw_annotations is None:
        log.warning(json_path, "no 'annotations' list; every image has no objects")
        raw_annotations = []
    elif not isinstance(raw_annotations, list):
        log.error(json_path, "'annotations' must be a list")
        raw_annotations = []
    category_ids = {c["id"] for c in categories}
    rows, segmentations = _read_annotations(
        raw_annotations, json_path, log, images, category_ids, bad_image_ids
    )
    kept = segmentations if keep_segmentation else None
    return _assemble(json_path, categories, images, rows, kept)


def _load_json(json_path: Path, log: ProblemLog) -> dict[str, Any] | None:
    try:
        with open_regular(json_path) as handle:
            data = json.load(handle)
    except FileNotFoundError:
        log.error(json_path, "annotation file is missing")
        return None
    except UnicodeDecodeError as exc:
        log.error(json_path, f"annotation file is not UTF-8 text ({exc.reason})")
        return None
    except json.JSONDecodeError as exc:
        log.error(json_path, f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")
        return None
    except RecursionError:
        log.error(json_path, "malformed JSON: nested too deeply")
        return None
    except OSError as exc:
        log.error(json_path, f"cannot read annotation file ({exc.strerror or exc})")
        return None
    if not isinstance(data, dict):
        log.error(json_path, "not a COCO annotation file: the top level must be a JSON object")
        return None
    return data


def _is_int(value: Any) -> bool:
    # Ids are stored as int64; `true` as an id is a mistake.
    return (
        isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, float) or _is_int(value)


def _read_categories(data: dict[str, Any], path: Path, log: ProblemLog) -> list[dict[str, Any]]:
    raw = data.get("categories")
    if not isinstance(raw, list) or not raw:
        log.error(path, "'categories' must be a non-empty list of {id, name}")
        return []
    too_many = too_many_classes(len(raw))
    if too_many:
        log.error(path, f"categories: {too_many}")
    categories: list[dict[str, Any]] = []
    seen: set[int] = set()
    for position, cat in enumerate(raw):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")):
            log.error(path, f"categories[{position}]: needs an integer 'id'")
            continue
        if not isinstance(cat.get("name"), str):
            log.error(path, f"category id {cat['id']}: needs a string 'name'")
            continue
        if not cat["name"].isprintable():
            log.error(path, f"category id {cat['id']}: name {cat['name']!r} has control characters")
            continue
        if cat["id"] in seen:
            log.error(path, f"category id {cat['id']} is declared twice")
            continue
        seen.add(cat["id"])
        categories.append(
            {"id": cat["id"], "name": cat["name"], "supercategory": cat.get("supercategory")}
        )
    return categories


def _read_images(
    data: dict[str, Any], path: Path, log: ProblemLog
) -> tuple[dict[int, tuple[str, int, int]], set[int]]:
    raw = data.get("images")
    if not isinstance(raw, list):
        log.error(path, "'images' must be a list")
        return {}, set()
    images: dict[int, tuple[str, int, int]] = {}
    bad: set[int] = set()
    names: set[str] = set()
    for position, img in enumerate(raw):
        if not isinstance(img, dict) or not _is_int(img.get("id")):
            log.error(path, f"images[{position}]: needs an integer 'id'")
            continue
        image_id = img["id"]
        if image_id in images or image_id in bad:
            log.error(path, f"image id {image_id} is used twice")
            continue
        name, width, height = img.get("file_name"), img.get("width"), img.get("height")
        problem = _image_entry_problem(name, width, height)
        if problem:
            log.error(path, f"image id {image_id}: {problem}")
            bad.add(image_id)
            continue
        if name in names:
            log.warning(path, f"image id {image_id}: file name {name!r} is listed twice")
        names.add(name)
        images[image_id] = (name, width, height)
    return images, bad


def _image_entry_problem(name: Any, width: Any, height: Any) -> str | None:
    if not isinstance(name, str):
        return "needs a string 'file_name'"
    reason = unsafe_name_reason(name)
    if reason:
        return reason
    if not (_is_int(width) and _is_int(height)) or width <= 0 or height <= 0:
        return f"width and height must be positive integers (got {width!r} x {height!r})"
    if width * height > max_image_pixels():
        return (
            f"{width}x{height} is more pixels than the limit of {max_image_pixels()} "
            f"(raise {PIXEL_LIMIT_ENV} for larger images)"
        )
    return None


def _read_annotations(
    raw: list[Any],
    path: Path,
    log: ProblemLog,
    images: dict[int, tuple[str, int, int]],
    category_ids: set[int],
    bad_image_ids: set[int],
) -> tuple[list[tuple[Any, ...]], list[Any]]:
    """The good annotations: rows ``(image_id, id, category_id, x, y, w, h, iscrowd, area)`` (atoms
    only, so the garbage collector does not track them) and their segmentations (or None)."""
    rows: list[tuple[Any, ...]] = []
    segmentations: list[Any] = []
    seen_ids: set[int] = set()
    for position, ann in enumerate(raw):
        if not isinstance(ann, dict) or not _is_int(ann.get("id")):
            log.error(path, f"annotations[{position}]: needs an integer 'id'")
            continue
        ann_id, image_id = ann["id"], ann.get("image_id")
        if ann_id in seen_ids:
            log.error(path, f"annotation id {ann_id} is used twice")
            continue
        seen_ids.add(ann_id)
        if _is_int(image_id) and image_id in bad_image_ids:
            continue  # the image entry was already reported
        where = f"annotation id {ann_id} (image id {image_id})"
        image = images.get(image_id) if _is_int(image_id) else None
        category_id, bbox = ann.get("category_id"), ann.get("bbox")
        iscrowd, segmentation = ann.get("iscrowd", 0), ann.get("segmentation")
        if image is None:
            log.error(path, f"annotation id {ann_id}: image_id {image_id!r} is not in images")
            continue
        _, width, height = image
        if not _is_int(category_id) or category_id not in category_ids:
            problem: str | None = f"category_id {category_id!r} is not declared"
        else:
            box = _check_box(bbox, width, height)
            problem = box if isinstance(box, str) else None
        if problem is None:
            x, y, w, h = box
            tol = OVERHANG_TOLERANCE_PX
            if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
                log.warning(
                    path,
                    f"{where}: bbox {bbox} extends outside the {width}x{height} image; "
                    "it is clipped",
                )
            if iscrowd not in (0, 1) or isinstance(iscrowd, float):
                problem = f"iscrowd must be 0 or 1 (got {iscrowd!r})"
            else:
                problem = segmentation_problem(segmentation, height, width)
        if problem:
            log.error(path, f"{where}: {problem}")
            continue
        area = ann.get("area")
        area = float(area) if _is_number(area) and math.isfinite(area) else w * h
        rows.append((image_id, ann_id, category_id, x, y, w, h, bool(iscrowd), area))
        segmentations.append(segmentation or None)
    return rows, segmentations


def _check_box(bbox: Any, width: int, height: int) -> tuple[float, float, float, float] | str:
    """The box as floats, or why it is unusable."""
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(map(_is_number, bbox)):
        return "bbox must be 4 numbers [x, y, width, height]"
    x, y, w, h = box = (float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3]))
    if not all(map(math.isfinite, box)):
        problem = "has a value that is not a finite number"
    elif w <= 0 or h <= 0:
        problem = "has zero or negative size"
    elif x >= width or y >= height or x + w <= 0 or y + h <= 0:
        problem = f"lies outside the {width}x{height} image"
    else:
        return box
    return f"bbox {bbox} {problem}"


def segmentation_problem(segmentation: Any, height: int, width: int) -> str | None:
    """Why a COCO ``segmentation`` value is unusable, or None (absent and empty are fine)."""
    if segmentation is None or segmentation == []:
        return None
    if isinstance(segmentation, dict):
        return rle_problem(segmentation, height, width)
    if not isinstance(segmentation, list):
        return "segmentation must be a list of polygons or an RLE object"
    for polygon in segmentation:
        if not isinstance(polygon, list) or not all(map(_is_number, polygon)):
            return "each polygon must be a list of numbers [x1, y1, x2, y2, ...]"
        problem = polygon_problem(polygon, height, width)
        if problem:
            return problem
    return None


def _assemble(
    json_path: Path,
    categories: list[dict[str, Any]],
    images: dict[int, tuple[str, int, int]],
    rows: list[tuple[Any, ...]],
    segmentations: list[Any] | None,
) -> CocoSplit:
    # Group annotations by image (a stable sort, so file order is kept within an image).
    position_of = {image_id: i for i, image_id in enumerate(images)}
    columns = list(zip(*rows, strict=True)) if rows else [()] * 9
    positions = np.fromiter(map(position_of.__getitem__, columns[0]), np.int64, len(rows))
    order = np.argsort(positions, kind="stable")
    counts = np.bincount(positions, minlength=len(images))
    names, widths, heights = zip(*images.values(), strict=True) if images else [()] * 3
    return CocoSplit(
        json_path=json_path,
        categories=categories,
        image_ids=np.fromiter(images, dtype=np.int64, count=len(images)),
        file_names=np.array(names, dtype=str),
        widths=np.array(widths, dtype=np.int64),
        heights=np.array(heights, dtype=np.int64),
        ann_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        ann_ids=np.array(columns[1], dtype=np.int64)[order],
        ann_category_ids=np.array(columns[2], dtype=np.int64)[order],
        ann_boxes=np.array(columns[3:7], dtype=np.float64).reshape(4, -1).T[order],
        ann_iscrowd=np.array(columns[7], dtype=bool)[order],
        ann_area=np.array(columns[8], dtype=np.float64)[order],
        segmentations=None if segmentations is None else [segmentations[i] for i in order],
    )
