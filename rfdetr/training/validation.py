"""Per-epoch evaluation of the trained and EMA models, and the metric records built from it.

The COCO evaluation itself is :func:`rfdetr.evaluation.coco.evaluate_model`; this module only
decides what to evaluate and turns the results into the numbers training logs and selects on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from rfdetr.data.dataset import DetectionDataset
from rfdetr.models.postprocess import PostProcess

if TYPE_CHECKING:
    from rfdetr.evaluation.coco import EvaluationResult


def evaluate(
    model: nn.Module,
    dataset: DetectionDataset,
    *,
    num_select: int,
    device: torch.device,
    batch_size: int,
    num_workers: int,
    segmentation: bool,
) -> EvaluationResult:
    """COCO metrics of ``model`` on ``dataset`` (a ``train=False`` split), bbox and Seg segm.

    The caller's train/eval mode is restored afterwards.
    """
    from rfdetr.evaluation.coco import evaluate_model

    was_training = model.training
    try:
        return evaluate_model(
            model,
            dataset,
            postprocess=PostProcess(num_select),
            device=device,
            batch_size=batch_size,
            num_workers=num_workers,
            segmentation=segmentation,
        )
    finally:
        model.train(was_training)


def selection_score(result: EvaluationResult) -> float:
    """What best-checkpoint selection and early stopping compare: primary mAP50:95."""
    return float(result.primary.map_50_95)


def metric_record(prefix: str, result: EvaluationResult) -> dict[str, float]:
    """Flat ``{prefix}map_50_95``-style numbers for ``log.txt`` (``segm_`` keys for Seg)."""
    record = {f"{prefix}{key}": value for key, value in result.bbox.to_dict().items()}
    if result.segm is not None:
        record |= {f"{prefix}segm_{key}": value for key, value in result.segm.to_dict().items()}
    return record


def checkpoint_metrics(result: EvaluationResult, source: str, epoch: int) -> dict[str, Any]:
    """Metrics stored in a best checkpoint: the selection score first, then the full result."""
    primary = result.primary
    return {
        "source": source,
        "epoch": epoch,
        "iou_type": "segm" if result.segm is not None else "bbox",
        "map_50_95": float(primary.map_50_95),
        "map_50": float(primary.map_50),
        "evaluation": result.to_dict(),
    }
