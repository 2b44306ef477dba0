"""COCOeval runs: pycocotools (or faster-coco-eval when installed) with named summary numbers.

Every summary number is read from COCOeval's accumulated ``precision`` / ``recall`` arrays the
same way pycocotools' ``summarize()`` reads them, so they are identical to ``stats`` without the
printing. The one difference from stock ``summarize()`` is upstream RF-DETR's: the AP numbers
and the area-range ARs use the largest ``maxDets`` (500 by default, not 100), so a model that
keeps 300 detections per image is not cut at 100. AR@1/10/100 are always reported as such.
"""

from __future__ import annotations

import contextlib
import io
import logging
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)

Backend = Literal["auto", "pycocotools", "faster-coco-eval"]
IouType = Literal["bbox", "segm"]

DEFAULT_MAX_DETS = 500  # upstream RF-DETR's eval_max_dets


def faster_available() -> bool:
    """True when the optional ``faster-coco-eval`` package can be imported."""
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: Backend) -> str:
    """The backend to use: ``auto`` picks faster-coco-eval when installed."""
    if backend == "auto":
        return "faster-coco-eval" if faster_available() else "pycocotools"
    if backend == "faster-coco-eval" and not faster_available():
        raise ValueError(
            "backend 'faster-coco-eval' is not installed; pip install faster-coco-eval, "
            "or use backend='pycocotools'"
        )
    if backend not in ("pycocotools", "faster-coco-eval"):
        raise ValueError(
            f"unknown COCO backend {backend!r}; use auto, pycocotools or faster-coco-eval"
        )
    return backend


def run_cocoeval(
    ground_truth: dict[str, Any],
    results: list[dict[str, Any]],
    iou_type: IouType,
    *,
    max_dets: int = DEFAULT_MAX_DETS,
    backend: Backend = "auto",
) -> Any:
    """Evaluate and accumulate ``results`` (COCO result dicts: ``bbox`` xywh pixels, and
    ``segmentation`` RLE for ``segm``) against a COCO dict ``ground_truth`` (crowd kept), counting
    ``max_dets`` detections per image by score (upstream: 500; at least 100); the COCOeval object.
    """
    name = resolve_backend(backend)
    if max_dets < 100:
        raise ValueError(f"max_dets must be at least 100 (AR@100 is reported), got {max_dets}")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints; a library logs
        coco_eval = _cocoeval(name, ground_truth, results, iou_type)
        coco_eval.params.maxDets = sorted({1, 10, 100, max_dets})
        coco_eval.evaluate()
        coco_eval.accumulate()
    logger.debug("%s %s: %d detections scored", name, iou_type, len(results))
    return coco_eval


def run_matching(
    ground_truth: dict[str, Any],
    results: list[dict[str, Any]],
    iou_type: IouType,
    *,
    max_dets: int = DEFAULT_MAX_DETS,
) -> Any:
    """pycocotools' per-image matching (``evalImgs``) at IoU 0.5, area ``all`` only.

    faster-coco-eval keeps its per-image matches in C++, out of Python's reach; the confidence
    sweep and the confusion matrix then read this cheaper pass (one IoU, one area range), which
    matches detections exactly as the full evaluation does.
    """
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = _cocoeval("pycocotools", ground_truth, results, iou_type)
        coco_eval.params.maxDets = [max_dets]
        coco_eval.params.iouThrs = np.array([0.5])
        coco_eval.params.areaRng = [coco_eval.params.areaRng[0]]
        coco_eval.params.areaRngLbl = ["all"]
        coco_eval.evaluate()
    return coco_eval


def _cocoeval(backend: str, ground_truth: dict[str, Any], results: list, iou_type: str) -> Any:
    if backend == "faster-coco-eval":
        from faster_coco_eval import COCO as coco_cls
        from faster_coco_eval import COCOeval_faster as eval_cls
    else:
        from pycocotools.coco import COCO as coco_cls
        from pycocotools.cocoeval import COCOeval as eval_cls
    coco_gt = _index(coco_cls(), ground_truth)
    if results:
        coco_dt = coco_gt.loadRes(results)
    else:  # loadRes cannot take an empty list; an empty result set scores 0 AP on every class.
        empty = {key: list(coco_gt.dataset[key]) for key in ("images", "categories")}
        coco_dt = _index(coco_cls(), {**empty, "annotations": []})
    extra = {"print_function": logger.debug} if backend == "faster-coco-eval" else {}
    return eval_cls(coco_gt, coco_dt, iou_type, **extra)


def _index(coco: Any, dataset: dict[str, Any]) -> Any:
    coco.dataset = dataset
    coco.createIndex()
    return coco


def summary_value(
    coco_eval: Any,
    *,
    ap: bool,
    iou: float | None = None,
    area: str = "all",
    max_dets: int | None = None,
    class_id: int | None = None,
) -> float:
    """One summary number, as pycocotools' ``summarize()`` computes it: the mean of the
    precision (``ap``) or recall over every IoU threshold (or ``iou``), class (or ``class_id``)
    and recall point, ignoring -1 entries (-1 when none is valid); ``max_dets`` None: the largest.
    """
    params = coco_eval.params
    area_index = list(params.areaRngLbl).index(area)
    dets = params.maxDets[-1] if max_dets is None else max_dets
    det_index = list(params.maxDets).index(dets)
    values = coco_eval.eval["precision" if ap else "recall"][..., area_index, det_index]
    if iou is not None:
        values = values[np.where(np.isclose(params.iouThrs, iou))[0]]
    values = values if class_id is None else values[..., class_id]
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0
