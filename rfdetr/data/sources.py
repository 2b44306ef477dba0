"""Per-image annotations of one split, from COCO or YOLO files, in one pixel-space form
(:func:`make_objects`). YOLO label files are parsed per item, so memory does not grow with the
dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from rfdetr.data.classes import ClassMap
from rfdetr.data.coco import CocoSplit
from rfdetr.data.images import check_inside
from rfdetr.data.masks import box_mask, coco_segmentation_to_mask, polygons_to_mask
from rfdetr.data.problems import DatasetError
from rfdetr.data.yolo import YoloLabels, YoloSplitFiles, read_labels_strict

Objects = dict[str, torch.Tensor]


class AnnotationSource(Protocol):
    """What :class:`~rfdetr.data.dataset.DetectionDataset` needs from a format reader."""

    class_map: ClassMap

    def __len__(self) -> int: ...

    def image_path(self, index: int) -> Path:
        """The image file of item ``index``; DatasetError when it resolves outside the dataset."""
        ...

    def image_id(self, index: int) -> int:
        """The image id (COCO ``id``; the item index for YOLO, which has no ids)."""
        ...

    def objects(self, index: int, width: int, height: int, with_masks: bool) -> Objects:
        """Training objects (crowd left out) of item ``index`` (:func:`make_objects`); DatasetError
        for invalid labels or (COCO) an image not of the size the annotation file states."""
        ...


def make_objects(
    labels: np.ndarray,
    boxes_xyxy: np.ndarray,
    width: int,
    height: int,
    masks: list[np.ndarray] | None,
) -> Objects:
    """Clip pixel xyxy ``boxes_xyxy`` ``[N, 4]`` to the image, drop those left without area,
    and build ``labels`` int64 ``[M]``, ``boxes`` float32 ``[M, 4]``, ``area`` float32 ``[M]``,
    ``iscrowd`` int64 ``[M]`` (zeros) and, from ``N`` bool ``[H, W]`` masks, ``masks``
    ``[M, H, W]``."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4).copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes = boxes[keep]
    objects = {
        "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64)[keep]),
        "boxes": torch.from_numpy(boxes),
        "area": torch.from_numpy((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])),
        "iscrowd": torch.zeros(len(boxes), dtype=torch.int64),
    }
    if masks is not None:
        kept = [m for m, k in zip(masks, keep, strict=True) if k]
        stacked = np.stack(kept) if kept else np.zeros((0, height, width), dtype=bool)
        objects["masks"] = torch.from_numpy(stacked)
    return objects


class CocoSource(AnnotationSource):
    """Items of a COCO split; annotation ``category_id`` values are mapped by ``class_map``."""

    def __init__(
        self, split: CocoSplit, split_dir: Path, class_map: ClassMap, root_real: str
    ) -> None:
        unknown = sorted(split.annotated_category_ids() - set(class_map.source_ids))
        if unknown:
            raise DatasetError(
                split.json_path, f"category ids {unknown} are not classes of the train split"
            )
        self.split, self.split_dir, self.class_map = split, split_dir, class_map
        self.root_real = root_real

    def __len__(self) -> int:
        return self.split.num_images

    def image_path(self, index: int) -> Path:
        path = self.split_dir / str(self.split.file_names[index])
        check_inside(path, self.root_real, "image")
        return path

    def image_id(self, index: int) -> int:
        return int(self.split.image_ids[index])

    def objects(self, index: int, width: int, height: int, with_masks: bool) -> Objects:
        split = self.split
        expected = (int(split.widths[index]), int(split.heights[index]))
        if (width, height) != expected:
            raise DatasetError(
                self.image_path(index),
                f"image is {width}x{height} but {split.json_path.name} says "
                f"{expected[0]}x{expected[1]}; run `rfdetr validate`",
            )
        start, stop = int(split.ann_offsets[index]), int(split.ann_offsets[index + 1])
        rows = [i for i in range(start, stop) if not split.ann_iscrowd[i]]
        labels = np.array(
            [self.class_map.index_of(int(split.ann_category_ids[i])) for i in rows], dtype=np.int64
        )
        xywh = split.ann_boxes[rows].reshape(-1, 4)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        masks = None
        if with_masks:
            if split.segmentations is None:
                raise ValueError("the COCO split was read without segmentations")
            try:
                masks = [
                    coco_segmentation_to_mask(split.segmentations[i], height, width, box)
                    for i, box in zip(rows, xyxy, strict=True)
                ]
            except ValueError as exc:  # validation reports these; never reach pycocotools
                raise DatasetError(split.json_path, str(exc)) from exc
        return make_objects(labels, xyxy, width, height, masks)


class YoloSource(AnnotationSource):
    """Items of a YOLO split; label files are read when an item is loaded."""

    def __init__(self, files: YoloSplitFiles, class_map: ClassMap, root_real: str) -> None:
        self.files, self.class_map, self.root_real = files, class_map, root_real
        # Paths as a numpy string array: one buffer, not a list of objects that fork-started
        # DataLoader workers would copy page by page as reference counts change.
        self._images = np.array([str(p) for p in files.images], dtype=str)

    def __len__(self) -> int:
        return len(self._images)

    def image_path(self, index: int) -> Path:
        path = Path(str(self._images[index]))
        check_inside(path, self.root_real, "image")
        return path

    def image_id(self, index: int) -> int:
        return index

    def labels(self, index: int) -> YoloLabels:
        image = Path(str(self._images[index]))
        return read_labels_strict(self.files.label_path(image), self.class_map, self.root_real)

    def objects(self, index: int, width: int, height: int, with_masks: bool) -> Objects:
        parsed = self.labels(index)
        labels = np.array([self.class_map.index_of(int(c)) for c in parsed.class_ids], np.int64)
        scale = np.array([width, height, width, height], dtype=np.float64)
        cx, cy, w, h = (parsed.boxes * scale).T
        xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        masks = None
        if with_masks:
            masks = [
                box_mask(box, height, width)
                if polygon is None
                else polygons_to_mask(
                    [polygon * np.tile(scale[:2], len(polygon) // 2)], height, width
                )
                for box, polygon in zip(xyxy.clip(0, scale), parsed.polygons, strict=True)
            ]
        return make_objects(labels, xyxy, width, height, masks)
