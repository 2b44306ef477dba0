"""Datasets: COCO and YOLO folders, detected, validated and loaded.

- :func:`detect_format` / :class:`DatasetLayout`: which format, where the splits are.
- :func:`validate_dataset` -> :class:`DatasetReport`: every problem, without training.
- :func:`build_dataset` -> :class:`DetectionDataset`: items ``(image [3, S, S], target)``.
- :func:`collate_fn`, :func:`make_train_sampler`, :func:`build_dataloader`: batching.
- :class:`ClassMap`: 0-based library ids <-> the dataset's own ids and names.
"""

from rfdetr.data.classes import ClassMap
from rfdetr.data.dataset import DetectionDataset, build_dataset, dataset_class_map
from rfdetr.data.formats import DatasetFormat, DatasetFormatError, DatasetLayout, detect_format
from rfdetr.data.ground_truth import coco_ground_truth
from rfdetr.data.loader import build_dataloader, collate_fn, make_train_sampler
from rfdetr.data.problems import DatasetError, Problem
from rfdetr.data.transforms import (
    build_transforms,
    multi_scale_sizes,
    pick_step_size,
    resize_batch,
)
from rfdetr.data.validation import DatasetReport, SplitSummary, validate_dataset

__all__ = [
    "ClassMap",
    "DatasetError",
    "DatasetFormat",
    "DatasetFormatError",
    "DatasetLayout",
    "DatasetReport",
    "DetectionDataset",
    "Problem",
    "SplitSummary",
    "build_dataloader",
    "build_dataset",
    "build_transforms",
    "coco_ground_truth",
    "collate_fn",
    "dataset_class_map",
    "detect_format",
    "make_train_sampler",
    "multi_scale_sizes",
    "pick_step_size",
    "resize_batch",
    "validate_dataset",
]
