"""COCO-format ground truth for evaluation (pycocotools ``COCO``), from any source format."""

from __future__ import annotations

from typing import Any

import numpy as np

from rfdetr.data.dataset import CocoSource, DetectionDataset, YoloSource
from rfdetr.data.images import read_image_size


def coco_ground_truth(dataset: DetectionDataset) -> dict[str, Any]:
    """A COCO dict (``images``, ``annotations``, ``categories``) for ``dataset``'s split.

    Category ids are the library's 0-based ids (the model's), each category also carrying its
    ``source_id``. Boxes are pixel ``[x, y, w, h]`` in the original image, clipped to it. Crowd
    annotations are kept (COCOeval ignores detections matched to them). With a segmentation
    dataset every annotation has a ``segmentation`` (the box as a polygon when it had none).
    Image ids equal the ``image_id`` of the dataset's targets.

    Raises:
        DatasetError: a YOLO label file is invalid.
        OSError: a YOLO image header cannot be read.
    """
    pairs = zip(dataset.class_map.names, dataset.class_map.source_ids, strict=True)
    categories = [
        {"id": i, "name": name, "source_id": source_id} for i, (name, source_id) in enumerate(pairs)
    ]
    source = dataset.source
    if isinstance(source, CocoSource):
        images, annotations = _from_coco(source, dataset.segmentation)
    else:
        images, annotations = _from_yolo(source, dataset.segmentation)
    return {"images": images, "annotations": annotations, "categories": categories}


def _box_polygon(x: float, y: float, w: float, h: float) -> list[list[float]]:
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _clip_xywh(box: np.ndarray, width: int, height: int) -> list[float]:
    x1, y1 = max(float(box[0]), 0.0), max(float(box[1]), 0.0)
    x2, y2 = min(float(box[0] + box[2]), width), min(float(box[1] + box[3]), height)
    return [x1, y1, max(x2 - x1, 0.0), max(y2 - y1, 0.0)]


def _from_coco(source: CocoSource, segmentation: bool) -> tuple[list[dict], list[dict]]:
    split = source.split
    images, annotations = [], []
    for i in range(split.num_images):
        image_id, name = source.image_id(i), str(split.file_names[i])
        width, height = int(split.widths[i]), int(split.heights[i])
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        for a in range(int(split.ann_offsets[i]), int(split.ann_offsets[i + 1])):
            bbox = _clip_xywh(split.ann_boxes[a], width, height)
            ann = {
                "id": int(split.ann_ids[a]),
                "image_id": image_id,
                "category_id": source.class_map.index_of(int(split.ann_category_ids[a])),
                "bbox": bbox,
                "area": float(split.ann_area[a]),
                "iscrowd": int(split.ann_iscrowd[a]),
            }
            if segmentation:  # the split was read with its segmentations
                ann["segmentation"] = split.segmentations[a] or _box_polygon(*bbox)
            annotations.append(ann)
    return images, annotations


def _from_yolo(source: YoloSource, segmentation: bool) -> tuple[list[dict], list[dict]]:
    images, annotations = [], []
    for i in range(len(source)):
        path = source.image_path(i)
        width, height = read_image_size(path)
        images.append({"id": i, "file_name": path.name, "width": width, "height": height})
        labels = source.labels(i)
        scale = np.array([width, height], dtype=np.float64)
        for class_id, (cx, cy, w, h), polygon in zip(
            labels.class_ids, labels.boxes, labels.polygons, strict=True
        ):
            box = np.array([(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height])
            bbox = _clip_xywh(box, width, height)
            ann = {
                "id": len(annotations) + 1,
                "image_id": i,
                "category_id": source.class_map.index_of(int(class_id)),
                "bbox": bbox,
                "area": bbox[2] * bbox[3],
                "iscrowd": 0,
            }
            if segmentation:
                pixel = None if polygon is None else (polygon * np.tile(scale, len(polygon) // 2))
                ann["segmentation"] = _box_polygon(*bbox) if pixel is None else [pixel.tolist()]
            annotations.append(ann)
    return images, annotations
