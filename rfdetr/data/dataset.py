"""Items of a split: per-image annotations from COCO or YOLO files in one pixel-space form
(:data:`AnnotationSource`, :func:`make_objects`; YOLO label files are parsed per item, so memory
does not grow with the dataset), the dataset class, and :func:`build_dataset`, the one call that
turns a folder into items."""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from rfdetr.data.classes import ClassMap
from rfdetr.data.coco import CocoSplit, read_coco_split
from rfdetr.data.formats import DatasetFormat, DatasetLayout, canonical_split, detect_format
from rfdetr.data.images import check_inside, load_rgb
from rfdetr.data.masks import box_mask, coco_segmentation_to_mask, polygons_to_mask
from rfdetr.data.normalize import one_thread
from rfdetr.data.problems import DatasetError, ProblemLog
from rfdetr.data.transforms import Target, Transform, build_transforms, multi_scale_sizes
from rfdetr.data.yolo import YoloLabels, YoloSplitFiles, parse_label_file, read_data_yaml

logger = logging.getLogger(__name__)

Objects = dict[str, torch.Tensor]


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


class CocoSource:
    """Items of a COCO split; annotation ``category_id`` values are mapped by ``class_map``.

    Both sources give ``image_path(index)`` (DatasetError when it resolves outside the dataset),
    ``image_id(index)`` (COCO ``id``; the item index for YOLO, which has no ids) and
    ``objects(index, width, height, with_masks)``: training objects, crowd left out
    (:func:`make_objects`); DatasetError for invalid labels or (COCO) an image not of the size
    the annotation file states.
    """

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
            try:
                masks = [
                    coco_segmentation_to_mask(split.segmentations[i], height, width, box)
                    for i, box in zip(rows, xyxy, strict=True)
                ]
            except ValueError as exc:  # validation reports these; never reach pycocotools
                raise DatasetError(split.json_path, str(exc)) from exc
        return make_objects(labels, xyxy, width, height, masks)


class YoloSource:
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
        """Labels of item ``index``; DatasetError (``path:LINE: problem``) on the first error."""
        log = ProblemLog()
        path = self.files.label_path(Path(str(self._images[index])))
        labels = parse_label_file(path, self.class_map, log, self.root_real)
        log.raise_first()
        return labels

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


AnnotationSource = CocoSource | YoloSource


@dataclass(eq=False)
class DetectionDataset(Dataset[tuple[torch.Tensor, Target]]):
    """Images and targets of one split, decoded lazily, one item at a time.

    An item is ``(image, target)``: ``image`` uint8 ``[3, S, S]`` (RGB pixels, not normalised:
    :func:`rfdetr.data.normalize.normalize_images` makes a batch of them the model's input), and
    ``target`` with ``labels`` int64 ``[N]`` (0-based), ``boxes`` float32 ``[N, 4]`` normalised
    cxcywh in [0, 1], ``masks`` bool ``[N, S, S]`` (segmentation only), ``area`` float32 ``[N]``
    (pixels of the output image), ``iscrowd`` int64 ``[N]`` (zeros: crowd regions are left out
    of training targets), ``image_id`` int, ``orig_size`` int64 ``[2]`` and ``size`` int64
    ``[2]``, both ``(h, w)``.

    Augmentation is seeded per item from ``(seed, epoch, index)``. The epoch comes with the key
    (``dataset[(epoch, index)]``, as :class:`rfdetr.data.loader.EpochSampler` sends it to
    persistent workers) or, for a plain index, from :meth:`set_epoch`.
    """

    source: AnnotationSource
    transforms: Transform
    segmentation: bool = False
    seed: int = 0
    sizes: list[int] = field(default_factory=list)
    format: DatasetFormat | None = None
    split: str = ""
    epoch: int = 0

    @property
    def class_map(self) -> ClassMap:
        """Class names and the dataset's own ids for each 0-based label."""
        return self.source.class_map

    @property
    def num_classes(self) -> int:
        return self.source.class_map.num_classes

    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draws for a new epoch."""
        self.epoch = epoch

    def load_raw(self, index: int) -> tuple[torch.Tensor, Target]:
        """The item before transforms (:func:`load_raw_item`)."""
        return load_raw_item(self.source, index, self.segmentation)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, Target]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        with one_thread():
            image, target = self.load_raw(index)
            # An integer seed (not hash()) so every process derives the same stream for an item.
            rng = random.Random((self.seed * 1_000_003 + epoch) * 1_000_000_007 + index)
            return self.transforms(image, target, rng)


def load_raw_item(
    source: AnnotationSource, index: int, segmentation: bool
) -> tuple[torch.Tensor, Target]:
    """Decode item ``index`` of ``source`` as training does (and ``rfdetr validate --deep``):
    uint8 ``[3, H, W]`` and the target before transforms (pixel xyxy ``boxes`` ``[N, 4]``,
    ``masks`` bool ``[N, H, W]`` when ``segmentation``).

    Raises:
        DatasetError: the image cannot be decoded or is outside the dataset, or its labels
            are invalid.
    """
    image = load_rgb(source.image_path(index))
    height, width = image.shape[-2:]
    target: Target = source.objects(index, width, height, segmentation)
    target["image_id"] = source.image_id(index)
    target["orig_size"] = torch.tensor([height, width], dtype=torch.int64)
    return image, target


def dataset_class_map(dataset_dir: str | Path) -> ClassMap:
    """The classes of a dataset: COCO categories of the train split, or YOLO ``names``.

    Raises:
        DatasetError: the format is not detected or the annotation/data file is unusable.
    """
    return _class_map(detect_format(dataset_dir))


def build_dataset(
    dataset_dir: str | Path,
    split: str,
    resolution: int,
    *,
    train: bool,
    segmentation: bool = False,
    scale_multiple: int | None = None,
    expanded_scales: bool = False,
    class_map: ClassMap | None = None,
    seed: int = 0,
) -> DetectionDataset:
    """A dataset of ``split`` (``train``, ``valid``/``val`` or ``test``) of a COCO or YOLO folder.

    Args:
        dataset_dir: the dataset folder (format detected).
        split: the split to read.
        resolution: square input size for evaluation, and the base of the training sizes.
        train: training augmentation (flip, resize/crop) or the plain validation resize.
        segmentation: also produce ``masks`` ``[N, S, S]``.
        scale_multiple: patch size x windows (e.g. 32). For training, enables multi-scale: the
            dataset resizes to the largest of :func:`multi_scale_sizes` and ``dataset.sizes``
            lists the per-step sizes. None: a single size, ``resolution``.
        expanded_scales: the wider multi-scale range (-5..+5 multiples instead of -3..+4).
        class_map: classes to use (e.g. from a checkpoint); default: the dataset's own.
        seed: base seed of the augmentation.

    Raises:
        DatasetError: the folder, the split or its annotation files cannot be used (one line).
    """
    layout = detect_format(dataset_dir)
    split = canonical_split(split)
    source = build_source(layout, split, class_map, segmentation)
    sizes = [resolution]
    if train and scale_multiple:
        sizes = multi_scale_sizes(resolution, scale_multiple, expanded_scales)
        logger.info("multi-scale training sizes: %s", sizes)
    transforms = build_transforms(train, resolution, train_size=max(sizes))
    logger.info(
        "%s %s split: %d images, %d classes",
        layout.format.value,
        split,
        len(source),
        source.class_map.num_classes,
    )
    return DetectionDataset(
        source,
        transforms,
        segmentation=segmentation,
        seed=seed,
        sizes=sizes,
        format=layout.format,
        split=split,
    )


def build_source(
    layout: DatasetLayout, split_name: str, class_map: ClassMap | None, segmentation: bool
) -> AnnotationSource:
    """The annotation source of one split. Raises DatasetError: the split is missing, outside
    the dataset folder, empty or unusable."""
    split_dir = layout.split_dir(split_name)
    root_real = os.path.realpath(layout.root)
    check_inside(split_dir, root_real, "split folder")
    if layout.format is DatasetFormat.YOLO:
        files = YoloSplitFiles(*layout.yolo_dirs(split_name))
        if not files.images:
            raise DatasetError(files.images_dir, f"the {split_name} split has no images")
        return YoloSource(files, class_map or _class_map(layout), root_real)
    split = _read_coco(layout, split_name, segmentation)
    if split.num_images == 0:
        raise DatasetError(split.json_path, f"the {split_name} split has no images")
    if class_map is None and split_name == "train":
        class_map = ClassMap.from_coco_categories(split.categories, split.annotated_category_ids())
    return CocoSource(split, split_dir, class_map or _class_map(layout), root_real)


def _class_map(layout: DatasetLayout) -> ClassMap:
    if layout.yaml_path is None:  # COCO: the categories of the train split
        split = _read_coco(layout, "train")
        return ClassMap.from_coco_categories(split.categories, split.annotated_category_ids())
    log = ProblemLog()
    class_map = read_data_yaml(layout.yaml_path, log)
    log.raise_on_error(layout.root)
    assert class_map is not None  # None only with an error in the log, raised above
    return class_map


def _read_coco(layout: DatasetLayout, split_name: str, segmentation: bool = False) -> CocoSplit:
    log = ProblemLog()
    json_path = layout.coco_annotation_path(split_name)
    split = read_coco_split(json_path, log, keep_segmentation=segmentation)
    log.raise_on_error(layout.root)
    assert split is not None  # None only with an error in the log, raised above
    return split
