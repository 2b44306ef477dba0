"""Validate a dataset folder without training on it: :func:`validate_dataset`. The loaders use
the same parsers, so a dataset that validates loads.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from rfdetr.data.classes import ClassMap
from rfdetr.data.coco import read_coco_split
from rfdetr.data.formats import (
    REQUIRED_SPLITS,
    SPLIT_FOLDERS,
    DatasetFormat,
    DatasetFormatError,
    DatasetLayout,
    detect_format,
)
from rfdetr.data.images import NotRegularFileError, check_inside, escapes_root, read_image_size
from rfdetr.data.problems import DatasetError, ProblemLog
from rfdetr.data.yolo import YoloSplitFiles, orphan_labels, parse_label_file, read_data_yaml

if TYPE_CHECKING:  # the loaders import torch: only --deep runs them
    from rfdetr.data.dataset import AnnotationSource


@dataclass
class SplitSummary:
    """Counts for one split; ``class_counts``: dataset class id -> objects."""

    name: str
    folder: str
    images: int = 0
    annotations: int = 0
    crowd: int = 0
    class_counts: Counter[int] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "class_counts"}


@dataclass(kw_only=True)
class DatasetReport(ProblemLog):
    """What :func:`validate_dataset` found; the problem log validation writes to.

    Attributes:
        path: the dataset folder as given.
        format: ``"coco"``, ``"yolo"`` or None when not detected.
        splits: per split (``train``/``valid``/``test``) image and annotation counts.
        class_map: the classes (0-based ids, dataset ids, names); None when unreadable.
        problems: every problem, in the order found (``errors``, ``warnings``: by severity).
    """

    path: str
    format: str | None = None
    splits: dict[str, SplitSummary] = field(default_factory=dict)
    class_map: ClassMap | None = None

    @property
    def usable(self) -> bool:
        return not self.errors

    def class_rows(self) -> list[dict[str, Any]]:
        """One row per class: 0-based ``id``, ``source_id``, ``name``, per-split ``counts``."""
        if self.class_map is None:
            return []
        pairs = zip(self.class_map.source_ids, self.class_map.names, strict=True)
        return [
            {
                "id": index,
                "source_id": source_id,
                "name": name,
                "counts": {s: split.class_counts[source_id] for s, split in self.splits.items()},
            }
            for index, (source_id, name) in enumerate(pairs)
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as printed by ``rfdetr validate --json``."""
        return {
            "path": self.path,
            "format": self.format,
            "usable": self.usable,
            "splits": {name: s.to_dict() for name, s in self.splits.items()},
            "classes": self.class_rows(),
            "skipped_classes": self.class_map.to_dict()["skipped"] if self.class_map else [],
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "problems": [asdict(p) for p in self.problems],
        }


def validate_dataset(path: str | Path, *, deep: bool = False) -> DatasetReport:
    """Check a COCO or YOLO dataset folder: every annotation and label file and every image
    *header* (never the pixels). Never raises for a problem in the dataset: each becomes a
    :class:`Problem` in the report, and ``report.usable`` says whether training can use it.

    Args:
        path: the dataset folder.
        deep: also decode every image and mask through training's own
            :func:`rfdetr.data.dataset.load_raw_item` (finds corrupt pixel data; imports torch).
    """
    report = DatasetReport(path=str(path))
    try:
        layout = detect_format(path)
    except DatasetFormatError as exc:
        report.error(exc.path, exc.problem)
        return report
    except OSError as exc:
        report.error(path, f"cannot read the dataset folder ({exc.strerror or exc})")
        return report
    report.format = layout.format.value
    for name in REQUIRED_SPLITS:
        if name not in layout.splits:
            looked = " or ".join(f"{f}/" for f in SPLIT_FOLDERS[name])
            report.error(layout.root / name, f"the {name} split is missing (looked for {looked})")
    root_real = os.path.realpath(layout.root)
    if layout.yaml_path is not None:  # YOLO: the classes come from data.yaml
        report.class_map = read_data_yaml(layout.yaml_path, report)
    with warnings.catch_warnings():
        # Big images are fine for training (they are resized); only PIL's hard limit is an error.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        for name, split_dir in layout.splits.items():
            report.splits[name] = SplitSummary(name, str(split_dir))
            if escapes_root(split_dir, root_real):
                problem = "split folder is a symlink that points outside the dataset folder"
                report.error(split_dir, problem)
            elif layout.format is DatasetFormat.COCO:
                _validate_coco(layout, name, root_real, report, deep)
            else:
                _validate_yolo(layout, name, root_real, report, deep)
    _warn_unused_classes(report)
    return report


def _validate_coco(
    layout: DatasetLayout, name: str, root_real: str, log: DatasetReport, deep: bool
) -> None:
    split_dir = layout.splits[name]
    split = read_coco_split(layout.coco_annotation_path(name), log, keep_segmentation=deep)
    if split is None:
        return
    class_map = log.class_map
    if name == "train":
        class_map = ClassMap.from_coco_categories(split.categories, split.annotated_category_ids())
        log.class_map = class_map
    elif class_map is not None:
        # The train split's categories: its classes and the superclasses it skipped.
        train = dict(zip(class_map.source_ids, class_map.names, strict=True))
        train.update(class_map.skipped)
        for category in split.categories:
            known = train.get(category["id"])
            if known is not None and known != category["name"]:
                log.error(
                    split.json_path,
                    f"category id {category['id']} is {category['name']!r} here but {known!r} "
                    "in the train split; every split must use the same categories",
                )
    summary = log.splits[name]
    summary.images = split.num_images
    summary.annotations = len(split.ann_ids)
    summary.crowd = int(split.ann_iscrowd.sum())
    summary.class_counts.update(int(c) for c in split.ann_category_ids)
    known = set(class_map.source_ids) if class_map is not None else set(summary.class_counts)
    unknown = sorted(set(summary.class_counts) - known)
    for category_id in unknown:
        log.error(
            split.json_path,
            f"{summary.class_counts[category_id]} annotations use category id {category_id}, "
            "which is not a class of the train split",
        )
    if split.num_images == 0:
        log.error(split.json_path, f"the {name} split has no images")
    good = []
    for i in range(split.num_images):
        expected = (int(split.widths[i]), int(split.heights[i]))
        if check_image(split_dir / str(split.file_names[i]), root_real, log, expected):
            good.append(i)
    if deep and class_map is not None and not unknown:
        from rfdetr.data.dataset import CocoSource  # imports torch: only for --deep

        _decode_items(CocoSource(split, split_dir, class_map, root_real), good, log)


def _validate_yolo(
    layout: DatasetLayout, name: str, root_real: str, log: DatasetReport, deep: bool
) -> None:
    files = YoloSplitFiles(*layout.yolo_dirs(name))
    if not files.images_dir.is_dir():
        log.error(files.images_dir, f"the {name} split has no images/ folder")
        return
    for linked in files.linked_dirs:
        if escapes_root(linked, root_real):
            log.error(linked, "symlinked folder points outside the dataset folder")
        else:
            log.warning(linked, "symlinked folder is not followed; its images are ignored")
    if not files.images:
        log.error(files.images_dir, f"the {name} split has no images")
        return
    if not files.labels_dir.is_dir():
        log.warning(files.labels_dir, "no labels/ folder; every image has no objects")
    summary = log.splits[name]
    summary.images = len(files.images)
    good = []
    for index, image in enumerate(files.images):
        errors = len(log.problems)
        size = check_image(image, root_real, log)
        labels = parse_label_file(files.label_path(image), log.class_map, log, root_real)
        summary.annotations += len(labels)
        summary.class_counts.update(labels.class_ids.tolist())
        if size and all(p.severity != "error" for p in log.problems[errors:]):
            good.append(index)
    if deep and log.class_map is not None:
        from rfdetr.data.dataset import YoloSource  # imports torch: only for --deep

        _decode_items(YoloSource(files, log.class_map, root_real), good, log)
    for orphan in orphan_labels(files):
        log.warning(orphan, "label file has no image with the same name; it is ignored")


def check_image(
    path: Path, root_real: str, log: ProblemLog, expected: tuple[int, int] | None = None
) -> tuple[int, int] | None:
    """``(width, height)`` from one image's header, or None with the problem in ``log``:
    outside ``root_real``, not a regular decodable image training can read, or not of the
    ``expected`` size."""
    try:
        check_inside(path, root_real, "image")
        size = read_image_size(path)
    except DatasetError as exc:
        log.error(exc.path, exc.problem)
        return None
    except FileNotFoundError:
        problem = "image file is missing"
    except NotRegularFileError:
        problem = "not a regular file (a FIFO, device or socket); refused unread"
    except Image.DecompressionBombError:
        problem = "image has more pixels than PIL allows (decompression-bomb limit)"
    except (OSError, SyntaxError, ValueError) as exc:
        # PIL raises SyntaxError/ValueError for some broken headers.
        problem = f"not a decodable image ({exc})"
    else:
        if expected is None or size == expected:
            return size
        problem = (
            f"image is {size[0]}x{size[1]} but the annotation file says "
            f"{expected[0]}x{expected[1]} (width x height)"
        )
    log.error(path, problem)
    return None


def _decode_items(source: AnnotationSource, indices: list[int], log: ProblemLog) -> None:
    """``--deep``: decode the items at ``indices`` (header and labels passed) as training does."""
    from rfdetr.data.dataset import load_raw_item

    for index in indices:
        try:
            load_raw_item(source, index, segmentation=True)
        except DatasetError as exc:
            log.error(exc.path, exc.problem)


def _warn_unused_classes(log: DatasetReport) -> None:
    train = log.splits.get("train")
    if log.class_map is None or train is None or train.images == 0:
        return
    for source_id, name in zip(log.class_map.source_ids, log.class_map.names, strict=True):
        if train.class_counts[source_id] == 0:
            log.warning(train.folder, f"class {name!r} (id {source_id}) has no training examples")
