"""``rfdetr.evaluate``: a model or checkpoint on a dataset folder, with a report on disk."""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rfdetr.evaluation.coco import check_classes
from rfdetr.evaluation.cocoeval import DEFAULT_MAX_DETS, Backend

if TYPE_CHECKING:
    from rfdetr.api import RFDETRModel
    from rfdetr.data.dataset import DetectionDataset
    from rfdetr.evaluation.coco import EvaluationResult
    from rfdetr.evaluation.predictions import ImagePredictions

logger = logging.getLogger(__name__)


def evaluate(
    model_or_checkpoint: RFDETRModel | str | os.PathLike[str],
    dataset_dir: str | os.PathLike[str],
    split: str = "valid",
    output_dir: str | os.PathLike[str] | None = None,
    *,
    size: str | None = None,
    device: str | None = None,
    batch_size: int = 4,
    num_workers: int = 0,
    max_dets: int = DEFAULT_MAX_DETS,
    backend: Backend = "auto",
    num_samples: int = 12,
) -> EvaluationResult:
    """COCO-evaluate a model on one split of a COCO or YOLO dataset folder: box (and, for Seg
    models, mask) metrics per class against the dataset's own category ids and names. With
    ``output_dir``, also writes ``metrics.json``, ``report.md``, ``report.html`` (self-contained,
    ``num_samples`` images drawn) and ``plots/*.png`` there.

    Args:
        model_or_checkpoint: an ``RFDETRNano(...)``-style model, or a checkpoint path (ours or
            upstream's); its size comes from the checkpoint's config, else from ``size``.
        split: ``valid`` (or ``val``), ``test`` or ``train``.
        device: ``cuda``, ``cpu``...; default: the model's device, or CUDA when available.
        max_dets, backend: see `rfdetr.evaluation.coco.score_predictions`.

    Raises `EvaluationError` (the model's classes are not the dataset's), `DatasetError` (no
    usable folder or split) or `CheckpointError` (unreadable, or no size: pass ``size``).
    """
    from rfdetr.data import coco_ground_truth
    from rfdetr.evaluation.coco import score_predictions
    from rfdetr.evaluation.predictions import predict_dataset

    started = time.perf_counter()
    model, source = _model_for(model_or_checkpoint, size=size, device=device)
    dataset = _checked_split(model, source, dataset_dir, split)
    if output_dir is not None:  # before the predictions: a file there fails now, not at the end
        Path(output_dir).mkdir(parents=True, exist_ok=True)
    predictions = predict_dataset(
        model.model,
        dataset,
        postprocess=model.postprocess,
        device=model.device,
        batch_size=batch_size,
        num_workers=num_workers,
        segmentation=dataset.segmentation,
    )
    scoring = {"segmentation": dataset.segmentation, "max_dets": max_dets, "backend": backend}
    result = score_predictions(coco_ground_truth(dataset), predictions, **scoring)
    seconds = time.perf_counter() - started
    logger.info(
        "%s split of %s: %s (%.1f s)", dataset.split, dataset_dir, result.summary(), seconds
    )
    if output_dir is not None:
        run = (model, source, dataset, dataset_dir, seconds)
        _write_outputs(result, predictions, Path(output_dir), num_samples, *run)
    return result


def _checked_split(
    model: RFDETRModel, source: str, dataset_dir: Any, split: str
) -> DetectionDataset:
    """The ``split`` of the dataset, once the model's classes are checked against its own."""
    from rfdetr.data import build_dataset, dataset_class_map

    class_map = dataset_class_map(dataset_dir)
    # placeholder names (no names recorded) are only counted, not compared
    known = model.class_names != [f"class_{i}" for i in range(len(model.class_names))]
    check_classes(
        model.class_names, class_map, source=source, dataset=str(dataset_dir), known=known
    )
    segmentation = bool(model.config.segmentation_head)
    return build_dataset(
        dataset_dir,
        split,
        model.resolution,
        train=False,
        segmentation=segmentation,
        class_map=class_map,
    )


def _write_outputs(
    result: EvaluationResult,
    predictions: list[ImagePredictions],
    output_dir: Path,
    num_samples: int,
    model: RFDETRModel,
    source: str,
    dataset: DetectionDataset,
    dataset_dir: Any,
    seconds: float,
) -> None:
    from rfdetr.evaluation.report import write_report
    from rfdetr.evaluation.samples import draw_samples

    meta = {  # the run's context: the report's head, and "meta" in metrics.json
        "model": source,
        "model config": model.config.name,
        "dataset": str(Path(dataset_dir).resolve()),
        "split": dataset.split,
        "resolution": model.resolution,
        "device": str(model.device),
        "evaluated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round(seconds, 1),
    }
    names = list(dataset.class_map.names)  # the dataset's: placeholders never reach a report
    samples = draw_samples(dataset, predictions, names, result.confidence_threshold, num_samples)
    write_report(result, output_dir, samples=samples, meta=meta)


def _model_for(
    model_or_checkpoint: Any, *, size: str | None, device: str | None
) -> tuple[RFDETRModel, str]:
    """(the model, moved to ``device`` when given, or loaded from a path; its name for reports)."""
    from rfdetr.api import RFDETRModel

    if isinstance(model_or_checkpoint, RFDETRModel):
        model = model_or_checkpoint
        if device is not None:
            import torch

            model.device = torch.device(device)
            model.model.to(model.device)
        return model, f"{type(model).__name__} ({model.config.name})"
    path = Path(model_or_checkpoint).expanduser()
    return RFDETRModel.from_checkpoint(path, size=size, device=device), str(path)
