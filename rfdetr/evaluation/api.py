"""``rfdetr.evaluate``: a model or checkpoint on a dataset folder, with a report on disk."""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rfdetr.errors import UserError
from rfdetr.evaluation.cocoeval import DEFAULT_MAX_DETS, Backend

if TYPE_CHECKING:
    from rfdetr.api import RFDETRModel
    from rfdetr.data.classes import ClassMap
    from rfdetr.data.dataset import DetectionDataset
    from rfdetr.evaluation.coco import EvaluationResult
    from rfdetr.evaluation.predictions import ImagePredictions

logger = logging.getLogger(__name__)


class EvaluationError(UserError, ValueError):
    """The model and the dataset cannot be evaluated together; the message is one line."""


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
        EvaluationError: the model's classes do not match the dataset's, or its size is unknown.
        DatasetError: the folder or the split is missing or unusable.
        CheckpointError: the checkpoint cannot be read.
    """
    from rfdetr.data import build_dataset, coco_ground_truth, dataset_class_map
    from rfdetr.evaluation.coco import score_predictions
    from rfdetr.evaluation.predictions import predict_dataset

    started = time.perf_counter()
    model, source, names_known = load_model(model_or_checkpoint, size=size, device=device)
    class_map = dataset_class_map(dataset_dir)
    check_classes(
        model.class_names, class_map, source=source, dataset=str(dataset_dir), known=names_known
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


def load_model(
    model_or_checkpoint: Any, *, size: str | None = None, device: str | None = None
) -> tuple[RFDETRModel, str, bool]:
    """(the model, a description for reports, whether its class names are real).

    An RFDETRModel is used as is (moved to ``device`` when given); a checkpoint is loaded
    through the public class of its size. Class names are placeholders (``class_<i>``) when
    the checkpoint records none or the model was built with only ``num_classes``.
    """
    from rfdetr.api import RFDETRModel

    if isinstance(model_or_checkpoint, RFDETRModel):
        model = model_or_checkpoint
        if device is not None:
            import torch

            model.device = torch.device(device)
            model.model.to(model.device)
        placeholders = [f"class_{i}" for i in range(len(model.class_names))]
        return (
            model,
            f"{type(model).__name__} ({model.config.name})",
            model.class_names != placeholders,
        )
    from rfdetr.weights import read_checkpoint

    path = Path(model_or_checkpoint).expanduser()
    checkpoint = read_checkpoint(path)  # one-line CheckpointError for missing or bad files
    name = size or checkpoint_size(checkpoint)
    if name is None:
        raise EvaluationError(
            f"{path}: the checkpoint does not record its model size; pass it with "
            "size=... (CLI: --size), e.g. nano or seg-small"
        )
    model = model_class(name)(pretrain_weights=path, device=device)
    return model, str(path), checkpoint.class_names is not None


def checkpoint_size(checkpoint: Any) -> str | None:
    """The preset name a checkpoint records: our config's ``name``, or upstream's class name
    (``model_name`` such as ``RFDETRNano``)."""
    from rfdetr.presets import list_presets

    config = checkpoint.config or {}
    if isinstance(config.get("model"), dict):  # a run config: the model section
        config = config["model"]
    name = config.get("name")
    if isinstance(name, str) and name in list_presets():
        return name
    model_name = checkpoint.extras.get("model_name")
    for cls in _variant_classes():
        if model_name == cls.__name__:
            return cls.size
    return None


def _variant_classes() -> list[type[RFDETRModel]]:
    from rfdetr import variants
    from rfdetr.api import RFDETRModel

    return [
        v
        for v in vars(variants).values()
        if isinstance(v, type) and issubclass(v, RFDETRModel) and v is not RFDETRModel
    ]


def model_class(size: str) -> type[RFDETRModel]:
    """The public class of a size (``RFDETRNano`` for ``nano``); presets without one (the
    test-sized ``tiny``) get a plain subclass of RFDETRModel.

    Raises:
        ValueError: the size is not a preset (the message lists them).
    """
    from rfdetr.api import RFDETRModel
    from rfdetr.presets import get_preset

    for cls in _variant_classes():
        if cls.size == size:
            return cls
    get_preset(size)  # raises for unknown sizes, naming the valid ones
    return type(f"RFDETR_{size.replace('-', '_')}", (RFDETRModel,), {"size": size})


def check_classes(
    names: list[str], class_map: ClassMap, *, source: str, dataset: str, known: bool = True
) -> None:
    """Refuse a model whose classes are not the dataset's: the count, then (when ``known``,
    i.e. the model's names are real, not placeholders) the names in class-id order.

    Raises:
        EvaluationError: one line naming both sides and the first difference.
    """
    names = list(names)
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
