"""Numbers derived from an accumulated COCOeval: per-class AP, the confidence sweep (precision /
recall / F1 per threshold) and the confusion matrix.

Class index ``k`` is the 0-based library id: the ground truth's category ids are ``0..C-1``,
so COCOeval's ``params.catIds`` is ``range(C)`` and its arrays are indexed by class id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from rfdetr.evaluation.cocoeval import summary_value

SWEEP_STEPS = 101  # thresholds 0.00, 0.01, ..., 1.00, as upstream's coco_extended_metrics
MATCH_IOU = 0.5


def per_class_ap(coco_eval: Any) -> tuple[list[float], list[float]]:
    """(AP50:95, AP50) of every class (area ``all``, largest ``maxDets``); -1: no ground truth."""
    classes = range(coco_eval.eval["precision"].shape[2])
    ap = [summary_value(coco_eval, ap=True, class_id=k) for k in classes]
    return ap, [summary_value(coco_eval, ap=True, iou=MATCH_IOU, class_id=k) for k in classes]


@dataclass(frozen=True)
class ThresholdSweep:
    """Precision, recall and F1 (``[C, S]``, and ``[S]`` macro) at ``[S]`` confidence thresholds
    (IoU 0.5, area all).

    A detection counts when its score is ``>= threshold``. Per class: precision = TP / (TP + FP)
    (0 with no detection), recall = TP / ground truths (0 without ground truth), F1 their
    harmonic mean. Macro values average the classes that have ground truth (``[C]`` ``num_gt``:
    non-crowd objects). ``best_index`` maximises macro F1; ties go to the lowest threshold.
    """

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    macro_precision: np.ndarray
    macro_recall: np.ndarray
    macro_f1: np.ndarray
    best_index: int
    num_gt: np.ndarray

    @property
    def best_threshold(self) -> float:
        """The confidence threshold that maximises macro F1."""
        return float(self.thresholds[self.best_index])


def sweep_thresholds(coco_eval: Any) -> ThresholdSweep:
    """The confidence sweep of :class:`ThresholdSweep` over :data:`SWEEP_STEPS` thresholds."""
    params = coco_eval.params
    t50 = int(np.flatnonzero(np.isclose(params.iouThrs, MATCH_IOU))[0])
    num_classes, num_images = len(params.catIds), len(params.imgIds)
    thresholds = np.linspace(0.0, 1.0, SWEEP_STEPS)
    tp, fp = np.zeros((num_classes, SWEEP_STEPS)), np.zeros((num_classes, SWEEP_STEPS))
    total_gt = np.zeros(num_classes, dtype=np.int64)
    for k in range(num_classes):
        # the class's non-ignored detections (scores, TP flags at IoU 0.5) and ground truths, from
        # COCOeval's per-image matching (area ``all``: the first of the class's area blocks)
        start = k * len(params.areaRng) * num_images
        s, h = [np.zeros(0)], [np.zeros(0, dtype=bool)]
        for record in coco_eval.evalImgs[start : start + num_images]:
            if record is None:
                continue
            keep = ~np.asarray(record["dtIgnore"])[t50].astype(bool)
            s.append(np.asarray(record["dtScores"], dtype=np.float64)[keep])
            h.append(np.asarray(record["dtMatches"])[t50][keep] > 0)
            total_gt[k] += int(np.sum(np.asarray(record["gtIgnore"]) == 0))
        scores, hits = np.concatenate(s), np.concatenate(h)
        order = np.argsort(scores, kind="stable")
        first = np.searchsorted(scores[order], thresholds, side="left")  # first score >= thr
        hits_from = np.concatenate([np.cumsum(hits[order][::-1])[::-1], [0]])  # TPs from i on
        tp[k], fp[k] = hits_from[first], len(scores) - first - hits_from[first]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(total_gt[:, None] > 0, tp / np.maximum(total_gt[:, None], 1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = total_gt > 0
    if present.any():
        macro = [m[present].mean(axis=0) for m in (precision, recall, f1)]
    else:
        macro = [np.zeros(SWEEP_STEPS) for _ in range(3)]
    return ThresholdSweep(
        thresholds, precision, recall, f1, *macro, int(np.argmax(macro[2])), total_gt
    )


def confusion_matrix(coco_eval: Any, threshold: float) -> np.ndarray:
    """``[C+1, C+1]`` counts: rows = ground-truth class, columns = predicted class, the last row
    and column the background.

    Detections scoring ``>= threshold`` are matched to non-crowd ground truths of any class,
    greedily by IoU (boxes, or masks for ``segm``), one to one, at IoU 0.5 or more. A matched
    pair adds to ``[true, predicted]``; a missed ground truth to ``[true, background]``; an
    unmatched detection to ``[background, predicted]`` unless it lies on a crowd region
    (COCO's crowd IoU >= 0.5), which COCO ignores too.
    """
    num_classes = len(coco_eval.params.catIds)
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    segm = coco_eval.params.iouType == "segm"
    gt_index, dt_index = coco_eval.cocoGt.imgToAnns, coco_eval.cocoDt.imgToAnns
    for image_id in coco_eval.params.imgIds:
        gts = gt_index.get(image_id, [])
        dts = [d for d in dt_index.get(image_id, []) if d["score"] >= threshold]
        crowd = [g for g in gts if g.get("iscrowd", 0)]
        gts = [g for g in gts if not g.get("iscrowd", 0)]
        ious = _ious(coco_eval, dts, gts, segm, iscrowd=0)
        pairs = np.argwhere(ious >= MATCH_IOU)
        matched_dt, matched_gt = [], []
        for d, g in pairs[np.argsort(-ious[pairs[:, 0], pairs[:, 1]], kind="stable")].tolist():
            if d not in matched_dt and g not in matched_gt:  # greedy, highest IoU first
                matched_dt.append(d)
                matched_gt.append(g)
                matrix[gts[g]["category_id"], dts[d]["category_id"]] += 1
        for g in set(range(len(gts))) - set(matched_gt):
            matrix[gts[g]["category_id"], num_classes] += 1
        unmatched = [d for d in range(len(dts)) if d not in matched_dt]
        on_crowd = _ious(coco_eval, [dts[d] for d in unmatched], crowd, segm, iscrowd=1)
        for d, overlap in zip(unmatched, on_crowd.max(axis=1, initial=0.0), strict=True):
            if overlap < MATCH_IOU:  # a detection on a crowd region is ignored, as COCO does
                matrix[num_classes, dts[d]["category_id"]] += 1
    return matrix


def _ious(coco_eval: Any, dts: list[dict], gts: list[dict], segm: bool, iscrowd: int) -> np.ndarray:
    """``[D, G]`` IoUs of detections and ground truths (boxes, or masks for ``segm``)."""
    if not dts or not gts:
        return np.zeros((len(dts), len(gts)))
    if segm:
        regions = [d["segmentation"] for d in dts], [coco_eval.cocoGt.annToRLE(g) for g in gts]
    else:
        regions = [d["bbox"] for d in dts], [g["bbox"] for g in gts]
    ious = mask_utils.iou(*regions, [iscrowd] * len(gts))
    return np.asarray(ious).reshape(len(dts), len(gts))
