"""Datasets: COCO and YOLO folders, detected, validated and loaded.

- :func:`detect_format` / :class:`DatasetLayout`: which format, where the splits are.
- :func:`validate_dataset` -> :class:`DatasetReport`: every problem, without training.
- :func:`build_dataset` -> :class:`DetectionDataset`: items ``(uint8 image [3, S, S], target)``.
- :func:`collate_fn`, :func:`make_train_sampler`, :func:`build_dataloader`: batching.
- :func:`normalize_images`: a uint8 batch -> the model's float input, on the model's device.
- :class:`ClassMap`: 0-based library ids <-> the dataset's own ids and names.
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
