"""Evaluate the selected model and write its reports (the ``evaluate`` step)."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.steps.common import single_file, step_metrics
from pipelines.steps.dataset import dataset_folder
from rfdetr.config import RunConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationOutcome:
    """What the evaluate step reports.

    Attributes:
        split: ``test`` or ``valid``.
        report_dir: ``metrics.json``, ``report.md``, ``report.html``, ``plots/``.
        metrics: flat figures for a ``Metrics`` artifact.
        confusion_labels: class names then ``background``.
        confusion_matrix: ``[C+1][C+1]`` counts, rows = ground truth, columns = prediction.
    """

    split: str
    report_dir: Path
    metrics: dict[str, float]
    confusion_labels: list[str]
    confusion_matrix: list[list[int]]

    @property
    def map_50_95(self) -> float:
        return self.metrics["map_50_95"]


def flat_metrics(result: Any) -> dict[str, float]:
    """The primary COCO figures, the F1-optimal operating point and per-class AP."""
    figures = {k: float(v) for k, v in result.primary.to_dict().items()}
    if result.segm is not None:
        figures |= {f"bbox_{k}": float(v) for k, v in result.bbox.to_dict().items()}
    point = ("confidence_threshold", "precision", "recall", "f1", "num_images")
    figures |= {name: float(getattr(result, name)) for name in point}
    for item in result.per_class:
        value = item.mask_ap_50_95 if result.segm is not None else item.ap_50_95
        if value is not None and value >= 0:  # COCO's -1: no ground truth in this split
            key = re.sub(r"[^0-9A-Za-z_]+", "_", item.name).strip("_") or "class"
            figures[f"ap_50_95_{key}"] = float(value)
    return figures


def evaluate_checkpoint(
    checkpoint_dir: str | Path,
    dataset_dir: str | Path,
    report_dir: str | Path,
    run_config: str | Path,
) -> EvaluationOutcome:
    """COCO-evaluate the checkpoint in ``checkpoint_dir`` on the fetched dataset's test split
    (else valid) with the run config's batch size and workers; reports go to ``report_dir``.

    Raises:
        EvaluationError: the model's classes are not the dataset's.
        DatasetError, CheckpointError: unusable inputs.
    """
    from rfdetr.data.formats import detect_format
    from rfdetr.evaluation.api import evaluate

    checkpoint = single_file(checkpoint_dir, "*.pth", "checkpoint")
    config = RunConfig.from_file(run_config)
    with step_metrics("evaluate") as metrics, dataset_folder(dataset_dir) as data:
        split = "test" if "test" in detect_format(data).splits else "valid"
        started = time.perf_counter()
        result = evaluate(
            checkpoint,
            data,
            split=split,
            output_dir=report_dir,
            batch_size=config.eval.eval_batch_size or config.train.batch_size,
            num_workers=config.data.num_workers,
        )
        seconds = time.perf_counter() - started
        figures = flat_metrics(result)
        metrics.set_map({k: figures[k] for k in ("map_50_95", "map_50", "map_75", "ar_100")})
        metrics.set_images_per_second(result.num_images / max(seconds, 1e-9))
    logger.info("%s split: %s", split, result.summary())
    return EvaluationOutcome(
        split=split,
        report_dir=Path(report_dir),
        metrics=figures,
        confusion_labels=[*result.class_names, "background"],
        confusion_matrix=[[int(v) for v in row] for row in result.confusion_matrix],
    )
