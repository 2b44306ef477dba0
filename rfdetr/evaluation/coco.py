"""COCO evaluation of a model on a dataset, with named metrics (the training loop's evaluator).

Scoring uses the library's 0-based class ids (as :func:`~rfdetr.data.coco_ground_truth` and the
model do); each per-class result carries the dataset's own category id (``source_id``) and name.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from rfdetr.data.classes import ClassMap
from rfdetr.data.dataset import DetectionDataset
from rfdetr.data.ground_truth import coco_ground_truth
from rfdetr.errors import UserError
from rfdetr.evaluation import analysis
from rfdetr.evaluation.cocoeval import (
    DEFAULT_MAX_DETS,
    Backend,
    resolve_backend,
    run_cocoeval,
    run_matching,
)
from rfdetr.evaluation.cocoeval import summary_value as _value
from rfdetr.evaluation.predictions import (
    ImagePredictions,
    predict_dataset_models,
    to_coco_results,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from rfdetr.evaluation.predictions import PredictOptions, RunOptions

    class EvaluateOptions(PredictOptions, total=False):
        max_dets: int
        backend: Backend


logger = logging.getLogger(__name__)


class EvaluationError(UserError, ValueError):
    """The model and the dataset cannot be evaluated together; the message is one line."""


@dataclass(frozen=True)
class CocoMetrics:
    """COCO summary of one IoU type (``bbox`` or ``segm``); floats in [0, 1], -1 when there is
    no ground truth to score. AP and the area ARs count up to ``max_dets`` detections per image.
    """

    map_50_95: float
    map_50: float
    map_75: float
    map_small: float
    map_medium: float
    map_large: float
    ar_1: float
    ar_10: float
    ar_100: float
    ar_small: float = -1.0
    ar_medium: float = -1.0
    ar_large: float = -1.0

    def to_dict(self) -> dict[str, float]:
        """Field name -> value."""
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}

    def as_stats(self) -> list[float]:
        """The 12 numbers in pycocotools' ``stats`` order."""
        return list(self.to_dict().values())

    @classmethod
    def from_cocoeval(cls, coco_eval: Any) -> CocoMetrics:
        """Read an accumulated COCOeval, as its ``summarize()`` would (without printing)."""
        return cls(**{key: _value(coco_eval, **how) for key, (_, how) in COCO_STATS.items()})


# CocoMetrics field: (report label, where `summary_value` reads it), in ``stats`` order.
COCO_STATS: dict[str, tuple[str, dict[str, Any]]] = {
    "map_50_95": ("mAP 50:95", {"ap": True}),
    "map_50": ("mAP 50", {"ap": True, "iou": 0.5}),
    "map_75": ("mAP 75", {"ap": True, "iou": 0.75}),
    "map_small": ("mAP small", {"ap": True, "area": "small"}),
    "map_medium": ("mAP medium", {"ap": True, "area": "medium"}),
    "map_large": ("mAP large", {"ap": True, "area": "large"}),
    "ar_1": ("AR @1", {"ap": False, "max_dets": 1}),
    "ar_10": ("AR @10", {"ap": False, "max_dets": 10}),
    "ar_100": ("AR @100", {"ap": False, "max_dets": 100}),
    "ar_small": ("AR small", {"ap": False, "area": "small"}),
    "ar_medium": ("AR medium", {"ap": False, "area": "medium"}),
    "ar_large": ("AR large", {"ap": False, "area": "large"}),
}


@dataclass(frozen=True)
class ClassMetrics:
    """Results of one class: ``class_id`` (the library's 0-based id, the model's label),
    ``category_id`` (the dataset's own id: COCO category id, YOLO class id), ``num_gt`` (non-crowd
    objects), box AP (-1 without ground truth), mask AP (Seg models, else None), and precision,
    recall, F1 at the chosen confidence threshold, IoU 0.5 (masks for Seg)."""

    class_id: int
    category_id: int
    name: str
    num_gt: int
    ap_50_95: float
    ap_50: float
    mask_ap_50_95: float | None
    mask_ap_50: float | None
    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class Curves:
    """Data behind the report's plots (primary IoU type, IoU 0.5): ``[R]`` ``recall_points``
    (COCO's 101) and ``[C][R]`` interpolated ``pr_precision`` per class (-1: no ground truth);
    ``[S]`` sweep ``thresholds``, ``[S]`` macro values and ``[C][S]`` ``class_f1`` per threshold.
    """

    recall_points: list[float]
    pr_precision: list[list[float]]
    thresholds: list[float]
    macro_precision: list[float]
    macro_recall: list[float]
    macro_f1: list[float]
    class_f1: list[list[float]]


@dataclass(frozen=True)
class EvaluationResult:
    """Everything one evaluation measured: ``bbox`` and ``segm`` (Seg models, else None) metrics,
    ``per_class`` in class-id order, the ``confidence_threshold`` maximising macro F1 (IoU 0.5)
    with the macro ``precision``, ``recall``, ``f1`` there, the ``[C+1][C+1]``
    ``confusion_matrix`` at that threshold (rows ground truth, columns prediction, last
    background: :func:`analysis.confusion_matrix`), ``curves`` for plots, ``num_images``, and the
    COCOeval ``max_dets`` and ``backend``.
    """

    bbox: CocoMetrics
    segm: CocoMetrics | None
    per_class: tuple[ClassMetrics, ...]
    confidence_threshold: float
    precision: float
    recall: float
    f1: float
    confusion_matrix: list[list[int]]
    curves: Curves
    num_images: int
    max_dets: int
    backend: str

    @property
    def primary(self) -> CocoMetrics:
        """The metrics that rank models: ``segm`` for Seg models, else ``bbox``."""
        return self.segm if self.segm is not None else self.bbox

    @property
    def iou_type(self) -> str:
        """``segm`` or ``bbox``: the type of :attr:`primary`, the sweep and the confusion matrix."""
        return "segm" if self.segm is not None else "bbox"

    @property
    def class_names(self) -> list[str]:
        """Class names in class-id order."""
        return [c.name for c in self.per_class]

    def summary(self) -> str:
        """One line for logs: ``bbox mAP50:95 0.4120, mAP50 0.6010 over 50 images``."""
        primary = self.primary
        return (
            f"{self.iou_type} mAP50:95 {primary.map_50_95:.4f}, mAP50 {primary.map_50:.4f} "
            f"over {self.num_images} images"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-able); ``segm`` is None for detection models."""
        per_class = [asdict(c) for c in self.per_class]
        return asdict(self) | {"iou_type": self.iou_type, "per_class": per_class}


def score_predictions(
    ground_truth: dict[str, Any],
    predictions: list[ImagePredictions],
    *,
    segmentation: bool = False,
    max_dets: int = DEFAULT_MAX_DETS,
    backend: Backend = "auto",
) -> EvaluationResult:
    """Score detections against a COCO ground truth with 0-based category ids ``0..C-1``.

    Args:
        ground_truth: from :func:`~rfdetr.data.coco_ground_truth`; each category may carry a
            ``source_id`` (the dataset's id, reported per class; defaults to the id).
        predictions: per image, labels as 0-based class ids, pixel xyxy boxes.
        segmentation: also score masks (each prediction needs ``masks``, the ground truth
            ``segmentation``); masks then rank the model, the sweep and the confusion matrix.
        max_dets, backend: see :func:`.cocoeval.run_cocoeval`.
    """
    categories = sorted(ground_truth["categories"], key=lambda c: c["id"])
    if [c["id"] for c in categories] != list(range(len(categories))):
        raise ValueError("ground-truth category ids must be 0..C-1 (use coco_ground_truth)")
    if segmentation and any(p.masks is None for p in predictions):
        raise ValueError("segmentation=True but some predictions have no masks")
    backend_name = resolve_backend(backend)
    evals, results = {}, {}
    for iou_type in ("bbox", "segm") if segmentation else ("bbox",):
        results[iou_type] = to_coco_results(predictions, segmentation=iou_type == "segm")
        evals[iou_type] = run_cocoeval(
            ground_truth, results[iou_type], iou_type, max_dets=max_dets, backend=backend_name
        )
    primary_type = "segm" if segmentation else "bbox"
    primary = evals[primary_type]
    matches = primary  # faster-coco-eval's per-image matches are out of reach: see run_matching
    if backend_name != "pycocotools":
        matches = run_matching(ground_truth, results[primary_type], primary_type, max_dets=max_dets)
    sweep = analysis.sweep_thresholds(matches)
    best = sweep.best_index
    return EvaluationResult(
        bbox=CocoMetrics.from_cocoeval(evals["bbox"]),
        segm=CocoMetrics.from_cocoeval(evals["segm"]) if segmentation else None,
        per_class=_per_class(categories, evals, sweep),
        confidence_threshold=sweep.best_threshold,
        precision=float(sweep.macro_precision[best]),
        recall=float(sweep.macro_recall[best]),
        f1=float(sweep.macro_f1[best]),
        confusion_matrix=analysis.confusion_matrix(matches, sweep.best_threshold).tolist(),
        curves=_curves(primary, sweep),
        num_images=len(ground_truth["images"]),
        max_dets=max_dets,
        backend=backend_name,
    )


def _per_class(
    categories: list[dict[str, Any]], evals: dict[str, Any], sweep: analysis.ThresholdSweep
) -> tuple[ClassMetrics, ...]:
    box_ap, box_ap50 = analysis.per_class_ap(evals["bbox"])
    mask_ap, mask_ap50 = analysis.per_class_ap(evals["segm"]) if "segm" in evals else (None, None)
    best = sweep.best_index
    return tuple(
        ClassMetrics(
            class_id=k,
            category_id=int(c.get("source_id", c["id"])),
            name=str(c["name"]),
            num_gt=int(sweep.num_gt[k]),
            ap_50_95=box_ap[k],
            ap_50=box_ap50[k],
            mask_ap_50_95=None if mask_ap is None else mask_ap[k],
            mask_ap_50=None if mask_ap50 is None else mask_ap50[k],
            precision=float(sweep.precision[k, best]),
            recall=float(sweep.recall[k, best]),
            f1=float(sweep.f1[k, best]),
        )
        for k, c in enumerate(categories)
    )


def _curves(primary: Any, sweep: analysis.ThresholdSweep) -> Curves:
    iou = np.flatnonzero(np.isclose(primary.params.iouThrs, analysis.MATCH_IOU))[0]
    precision = primary.eval["precision"][iou, :, :, 0, -1]  # [R, C]: area all, largest maxDets
    return Curves(
        recall_points=[float(r) for r in primary.params.recThrs],
        pr_precision=precision.T.tolist(),
        thresholds=sweep.thresholds.tolist(),
        macro_precision=sweep.macro_precision.tolist(),
        macro_recall=sweep.macro_recall.tolist(),
        macro_f1=sweep.macro_f1.tolist(),
        class_f1=sweep.f1.tolist(),
    )


def evaluate_model(
    model: nn.Module, dataset: DetectionDataset, **options: Unpack[EvaluateOptions]
) -> EvaluationResult:
    """COCO-evaluate ``model`` (an ``RFDETR``, or anything with its outputs) on a validation
    ``dataset`` (built with ``train=False``): its detections
    (:func:`~rfdetr.evaluation.predictions.predict_dataset`, whose keywords it takes; its
    train/eval mode is restored afterwards) scored by :func:`score_predictions` (``segmentation``,
    ``max_dets``, ``backend``) against :func:`~rfdetr.data.coco_ground_truth`, crowd regions kept.

    Raises:
        ValueError: ``segmentation`` is asked of a dataset or model without masks.
    """
    return evaluate_models([model], dataset, **options)[0]


def evaluate_models(
    models: Sequence[nn.Module],
    dataset: DetectionDataset,
    *,
    segmentation: bool = False,
    max_dets: int = DEFAULT_MAX_DETS,
    backend: Backend = "auto",
    **options: Unpack[RunOptions],
) -> list[EvaluationResult]:
    """:func:`evaluate_model` of each of ``models``, their predictions made in one pass over
    ``dataset`` (:func:`~rfdetr.evaluation.predictions.predict_dataset_models`)."""
    if segmentation and not dataset.segmentation:
        raise ValueError("segmentation=True needs a dataset built with segmentation=True")
    modes = [model.training for model in models]
    try:
        found = predict_dataset_models(models, dataset, segmentation=segmentation, **options)
    finally:
        for model, was_training in zip(models, modes, strict=True):
            model.train(was_training)
    results = []
    for predictions in found:  # a fresh ground truth each: scoring must not see another's
        result = score_predictions(
            coco_ground_truth(dataset), predictions, segmentation=segmentation, max_dets=max_dets,
            backend=backend,
        )  # fmt: skip
        logger.debug("%s", result.summary())
        results.append(result)
    return results


def check_classes(
    names: list[str], class_map: ClassMap, *, source: str, dataset: str, known: bool = True
) -> None:
    """Refuse a model whose classes are not the dataset's: the count, then (when ``known``: real
    names, not placeholders) the names in class-id order.

    Raises:
        EvaluationError: one line naming both sides and the first difference.
    """
    wanted = list(class_map.names)
    if len(names) != len(wanted):
        raise EvaluationError(
            f"{source}: the model has {len(names)} classes but {dataset} has {len(wanted)} "
            f"({_preview(wanted)}); evaluate on the dataset the model was trained on"
        )
    if not known:
        logger.warning("%s records no class names; assuming the dataset's order", source)
        return
    for i, (have, want) in enumerate(zip(names, wanted, strict=True)):
        if have != want:
            raise EvaluationError(
                f"{source}: class {i} is {have!r} in the model but {want!r} in {dataset} "
                f"(model: {_preview(names)}; dataset: {_preview(wanted)}); evaluate on the "
                "dataset the model was trained on"
            )


def _preview(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... {len(names) - limit} more" if len(names) > limit else "")
