"""Run a model over a dataset and keep its detections per image, in original-image pixels."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch import nn

from rfdetr.data.dataset import DetectionDataset
from rfdetr.data.loader import build_dataloader
from rfdetr.data.normalize import normalize_images
from rfdetr.models.postprocess import PostProcess, resize_masks

if TYPE_CHECKING:
    from typing_extensions import Required, TypedDict, Unpack

    class RunOptions(TypedDict, total=False):
        postprocess: Required[PostProcess]
        device: torch.device | str
        batch_size: int
        num_workers: int

    class PredictOptions(RunOptions, total=False):
        segmentation: bool


logger = logging.getLogger(__name__)

Runtime = Callable[[torch.Tensor], dict[str, torch.Tensor]]  # e.g. `ONNXRuntimeModel`
_MASK_CHUNK = 32  # masks decoded to full size at a time: bounds memory on large images


@dataclass(frozen=True)
class ImagePredictions:
    """The detections of one image: its dataset ``index`` and ``image_id`` (COCO ``id``; the
    index for YOLO), original ``height`` and ``width`` in pixels, float32 ``[K]`` ``scores``
    (descending), int64 ``[K]`` 0-based ``labels``, float32 ``[K, 4]`` ``boxes`` (pixel xyxy in the
    original image) and ``masks``: ``K`` COCO RLE dicts (Seg models), else None."""

    index: int
    image_id: int
    height: int
    width: int
    scores: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    masks: list[dict[str, Any]] | None = None

    def decoded_masks(self) -> np.ndarray | None:
        """bool ``[K, H, W]`` masks, or None for a detection model."""
        if self.masks is None:
            return None
        if not self.masks:
            return np.zeros((0, self.height, self.width), dtype=bool)
        return mask_utils.decode(self.masks).transpose(2, 0, 1).astype(bool)


def encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """bool ``[K, H, W]`` -> ``K`` COCO RLE dicts (``counts`` as str, JSON-able)."""
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return list(rles)


def to_coco_results(predictions: list[ImagePredictions], segmentation: bool) -> list[dict]:
    """COCO result dicts (``image_id``, 0-based ``category_id``, ``bbox`` xywh, ``score`` and,
    for ``segmentation``, ``segmentation`` RLE), the input of ``COCO.loadRes``."""
    results: list[dict] = []
    for pred in predictions:
        xywh = pred.boxes.astype(np.float64).reshape(-1, 4)
        xywh[:, 2:] -= xywh[:, :2]
        # .tolist() converts whole arrays at once: 300 detections x thousands of images
        columns = zip(
            xywh.tolist(),
            pred.scores.astype(np.float64).tolist(),
            pred.labels.astype(np.int64).tolist(),
            strict=True,
        )
        items = [
            {"image_id": pred.image_id, "category_id": label, "bbox": box, "score": score}
            for box, score, label in columns
        ]
        if segmentation and pred.masks is not None:
            for item, rle in zip(items, pred.masks, strict=True):
                item["segmentation"] = rle
        results.extend(items)
    return results


def predict_dataset(
    model: nn.Module | Runtime, dataset: DetectionDataset, **options: Unpack[PredictOptions]
) -> list[ImagePredictions]:
    """Detections of ``model`` on every image of ``dataset``, in dataset order (keywords: those
    of :func:`predict_dataset_models`)."""
    return predict_dataset_models([model], dataset, **options)[0]


@torch.inference_mode()
def predict_dataset_models(
    models: Sequence[nn.Module | Runtime],
    dataset: DetectionDataset,
    *,
    postprocess: PostProcess,
    device: torch.device | str = "cpu",
    batch_size: int = 4,
    num_workers: int = 0,
    segmentation: bool = False,
) -> list[list[ImagePredictions]]:
    """Per model (in order), its detections on every image of ``dataset``, in one pass: each
    batch is loaded and normalised once and run through every model (the training loop's regular
    and EMA models).

    A torch model is put in eval mode and moved to ``device`` (a `Runtime` runs as it is);
    images are the dataset's resized uint8 items, normalised per batch on ``device``; boxes and
    masks are scaled back to each image's ``orig_size``, masks kept as RLE so memory does not
    grow with image size.
    """
    device = torch.device(device)
    for model in models:
        if isinstance(model, nn.Module):
            model.eval().to(device)
    loader = build_dataloader(dataset, batch_size, num_workers=num_workers)
    found: list[list[ImagePredictions]] = [[] for _ in models]
    for images, targets in loader:
        pixels = normalize_images(images, device)
        sizes = torch.stack([t["orig_size"] for t in targets]).to(device)
        for model, predictions in zip(models, found, strict=True):
            outputs = model(pixels)
            mask_logits = outputs.get("pred_masks") if segmentation else None
            selected = postprocess.select(
                outputs["pred_logits"], outputs["pred_boxes"], sizes, mask_logits
            )
            predictions.extend(_batch_predictions(selected, targets, sizes, len(predictions)))
    logger.debug("predicted %d images with %d model(s)", len(found[0]), len(models))
    return found


def _batch_predictions(
    selected: tuple[torch.Tensor, ...],
    targets: list[dict[str, Any]],
    sizes: torch.Tensor,
    first_index: int,
) -> list[ImagePredictions]:
    """`PostProcess.select`'s ``(boxes, scores, labels[, mask logits])`` as one record per image."""
    boxes, scores, labels, *kept = selected
    predictions = []
    for i, target in enumerate(targets):
        masks: list[dict[str, Any]] | None = None
        if kept:  # chunked: all K x H x W bool masks at once can be gigabytes
            logits, masks = kept[0][i], []
            for start in range(0, len(logits), _MASK_CHUNK):
                chunk = resize_masks(logits[start : start + _MASK_CHUNK], tuple(sizes[i].tolist()))
                masks.extend(encode_masks(chunk.cpu().numpy()))
        height, width = (int(v) for v in target["orig_size"])
        predictions.append(
            ImagePredictions(
                index=first_index + i,
                image_id=int(target["image_id"]),
                height=height,
                width=width,
                scores=scores[i].float().cpu().numpy(),
                labels=labels[i].cpu().numpy().astype(np.int64),
                boxes=boxes[i].float().cpu().numpy(),
                masks=masks,
            )
        )
    return predictions
