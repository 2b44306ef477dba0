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
    """COCO-evaluate a model on one split of a COCO or YOLO dataset folder.

    Box metrics (and mask metrics for Seg models) are reported per class against the dataset's
    own category ids and names. With ``output_dir``, also writes ``metrics.json``, ``report.md``,
    ``report.html`` (self-contained) and ``plots/*.png`` there.

    Args:
        model_or_checkpoint: an ``RFDETRNano(...)``-style model, or a checkpoint path (ours or
            upstream's); its size comes from the checkpoint's config unless ``size`` is given.
        dataset_dir: the dataset folder (format detected).
        split: ``valid`` (or ``val``), ``test`` or ``train``.
        output_dir: where to write the report; None writes nothing.
        size: model size for a checkpoint that does not record it (``nano``, ``seg-small``...).
        device: ``cuda``, ``cpu``...; default: the model's device, or CUDA when available.
        batch_size: images per forward pass.
        num_workers: DataLoader worker processes.
        max_dets: detections per image COCOeval counts (upstream: 500).
        backend: ``auto`` (faster-coco-eval when installed), ``pycocotools`` or
            ``faster-coco-eval``.
        num_samples: images drawn in the HTML report.

    Raises:
        EvaluationError: the model's classes do not match the dataset's.
        DatasetError: the folder or the split is missing or unusable.
        CheckpointError: the checkpoint cannot be read or records no size (pass ``size``).
    """
    from rfdetr.data import build_dataset, coco_ground_truth, dataset_class_map
    from rfdetr.evaluation.coco import score_predictions
    from rfdetr.evaluation.predictions import predict_dataset

    started = time.perf_counter()
    model, source = _model_for(model_or_checkpoint, size=size, device=device)
    class_map = dataset_class_map(dataset_dir)
    # Placeholder names (a checkpoint without names, a model built with num_classes) are not
    # compared, only counted.
    known = model.class_names != [f"class_{i}" for i in range(len(model.class_names))]
    check_classes(
        model.class_names, class_map, source=source, dataset=str(dataset_dir), known=known
    )
    segmentation = bool(model.config.segmentation_head)
    dataset = build_dataset(
        dataset_dir,
        split,
        model.resolution,
        train=False,
        segmentation=segmentation,
        class_map=class_map,
    )
    predictions = predict_dataset(
        model.model,
        dataset,
        postprocess=model.postprocess,
        device=model.device,
        batch_size=batch_size,
        num_workers=num_workers,
        segmentation=segmentation,
    )
    ground_truth = coco_ground_truth(dataset)
    result = score_predictions(
        ground_truth, predictions, segmentation=segmentation, max_dets=max_dets, backend=backend
    )
    seconds = time.perf_counter() - started
    logger.info(
        "%s split of %s: %s mAP50:95 %.4f, mAP50 %.4f (%d images, %.1f s)",
        dataset.split,
        dataset_dir,
        result.iou_type,
        result.primary.map_50_95,
        result.primary.map_50,
        result.num_images,
        seconds,
    )
    if output_dir is not None:
        meta = _meta(model, source, dataset, dataset_dir, seconds)
        _write_outputs(result, dataset, predictions, Path(output_dir), meta, num_samples)
    return result


def _meta(
    model: RFDETRModel, source: str, dataset: DetectionDataset, dataset_dir: Any, seconds: float
) -> dict[str, Any]:
    """The run's context, shown at the top of the report and stored in metrics.json."""
    return {
        "model": source,
        "model config": model.config.name,
        "dataset": str(Path(dataset_dir).resolve()),
        "split": dataset.split,
        "resolution": model.resolution,
        "device": str(model.device),
        "evaluated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round(seconds, 1),
    }


def _write_outputs(
    result: EvaluationResult,
    dataset: DetectionDataset,
    predictions: list[ImagePredictions],
    output_dir: Path,
    meta: dict[str, Any],
    num_samples: int,
) -> None:
    from rfdetr.evaluation.report import write_report
    from rfdetr.evaluation.samples import draw_samples

    names = list(dataset.class_map.names)  # the dataset's: placeholders never reach a report
    threshold = result.confidence_threshold
    samples = draw_samples(dataset, predictions, names, threshold, num_samples)
    write_report(result, output_dir, samples=samples, meta=meta)


def _model_for(
    model_or_checkpoint: Any, *, size: str | None, device: str | None
) -> tuple[RFDETRModel, str]:
    """(the model, a description for reports). A model is used as is (moved to ``device`` when
    given); a checkpoint path loads through `RFDETRModel.from_checkpoint`."""
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
