"""Datasets: COCO and YOLO folders detected (:func:`detect_format`), validated
(:func:`validate_dataset`) and loaded (:func:`build_dataset`: items ``(uint8 image [3, S, S],
target)``), batched (:func:`build_dataloader`) and normalised (:func:`normalize_images`).
"""

from __future__ import annotations

from rfdetr.utils.lazy import lazy_names

# Imported on first use: validation needs no torch, so `rfdetr validate` starts fast.
_LAZY: dict[str, str] = {
    "ClassMap": "classes",
    "DetectionDataset": "dataset",
    "build_dataset": "dataset",
    "dataset_class_map": "dataset",
    "DatasetFormat": "formats",
    "DatasetFormatError": "formats",
    "DatasetLayout": "formats",
    "detect_format": "formats",
    "coco_ground_truth": "ground_truth",
    "build_dataloader": "loader",
    "collate_fn": "loader",
    "make_train_sampler": "loader",
    "normalize_images": "normalize",
    "DatasetError": "problems",
    "DatasetReport": "validation",
    "validate_dataset": "validation",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
