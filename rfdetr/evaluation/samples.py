"""Sample images for the report: ground truth and predictions drawn with supervision."""

from __future__ import annotations

import io
from dataclasses import dataclass, replace

import numpy as np
import supervision as sv
from PIL import Image, ImageDraw, ImageFont

from rfdetr.data.dataset import DetectionDataset
from rfdetr.evaluation.predictions import ImagePredictions

PANEL_SIDE = 360  # longer side of each drawn panel, in pixels: readable labels for any image
MAX_DRAWN = 50  # predictions drawn per image at most (highest scores first)
_CAPTION = 26


@dataclass(frozen=True)
class SampleImage:
    """One drawn sample: a PNG of ground truth (left) and predictions (right) side by side."""

    file_name: str
    png: bytes
    num_gt: int
    num_predicted: int


def draw_samples(
    dataset: DetectionDataset,
    predictions: list[ImagePredictions],
    class_names: list[str],
    threshold: float,
    count: int = 12,
) -> list[SampleImage]:
    """Draw ``count`` images of ``dataset``, spread evenly, with their ground truth and the
    predictions scoring ``>= threshold`` (masks too for Seg models); ``predictions[i]`` belongs to
    item ``i``."""
    samples, total = [], len(predictions)
    for index in sorted({int(i) for i in np.linspace(0, total - 1, max(0, min(count, total)))}):
        image, target = dataset.load_raw(index)
        rgb = image.permute(1, 2, 0).numpy()
        masks = target.get("masks") if dataset.segmentation else None
        truth = sv.Detections(
            xyxy=target["boxes"].numpy().astype(np.float32).reshape(-1, 4),
            class_id=target["labels"].numpy().astype(int),
            mask=masks.numpy().astype(bool) if masks is not None else None,
        )
        pred = predictions[index]
        keep = np.flatnonzero(pred.scores >= threshold)[:MAX_DRAWN]
        pred_masks = pred.decoded_masks()
        predicted = sv.Detections(
            xyxy=pred.boxes[keep].reshape(-1, 4),
            confidence=pred.scores[keep],
            class_id=pred.labels[keep].astype(int),
            mask=pred_masks[keep] if pred_masks is not None else None,
        )
        left = _draw(rgb, truth, class_names, "ground truth", scores=False)
        right = _draw(rgb, predicted, class_names, f"predictions >= {threshold:.2f}", scores=True)
        canvas = Image.new("RGB", (left.width + right.width + 8, left.height), "white")
        canvas.paste(left, (0, 0))
        canvas.paste(right, (left.width + 8, 0))
        buffer = io.BytesIO()
        canvas.save(buffer, format="PNG", optimize=True)
        samples.append(
            SampleImage(
                file_name=dataset.source.image_path(index).name,
                png=buffer.getvalue(),
                num_gt=len(truth),
                num_predicted=len(predicted),
            )
        )
    return samples


def _draw(
    rgb: np.ndarray, detections: sv.Detections, names: list[str], caption: str, *, scores: bool
) -> Image.Image:
    height, width = rgb.shape[:2]
    scale = PANEL_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    scene = Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR)
    if len(detections):
        mask = detections.mask
        if mask is not None:
            resized = (Image.fromarray(m.astype(np.uint8) * 255).resize(size) for m in mask)
            mask = np.stack([np.asarray(m) > 127 for m in resized])
        detections = replace(detections, xyxy=detections.xyxy * scale, mask=mask)
        if detections.mask is not None:
            scene = sv.MaskAnnotator(opacity=0.45).annotate(scene, detections)
        scene = sv.BoxAnnotator(thickness=2).annotate(scene, detections)
        labels = [f"{names[c] if c < len(names) else c}" for c in detections.class_id]
        if scores:
            labels = [f"{t} {s:.2f}" for t, s in zip(labels, detections.confidence, strict=True)]
        scene = sv.LabelAnnotator(text_scale=0.45, text_padding=4).annotate(
            scene, detections, labels=labels
        )
    framed = Image.new("RGB", (scene.width, scene.height + _CAPTION), "white")
    framed.paste(scene, (0, _CAPTION))
    font = ImageFont.load_default(size=15)
    ImageDraw.Draw(framed).text(
        (4, 4), f"{caption} ({len(detections)})", fill=(40, 40, 40), font=font
    )
    return framed
