"""What a lower-precision or other-runtime export costs against the fp32 ONNX file, on the
dataset's validation images (never used for calibration), through the evaluation code
(`predict_dataset`, `score_predictions`: the mAP ``rfdetr eval`` shows). Each fp32 detection
scoring >= ``threshold`` is matched to the same-class detection of highest IoU (>= 0.5).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rfdetr.export.onnx import copy_header
from rfdetr.export.openvino import add_rt_info
from rfdetr.utils.atomic import write_atomic
from rfdetr.utils.box_ops import box_iou

MATCH_IOU = 0.5


@dataclass(frozen=True)
class AccuracyReport:
    """One export against the fp32 ONNX file on a dataset split (see the module docstring).

    Attributes:
        file, reference: the export measured and the fp32 file.
        split, images: the split and its image count.
        threshold: fp32 detections at or above it are matched.
        matched, unmatched: fp32 detections with / without a match in ``file``.
        max_box_px: largest ``|d x1|, |d y1|, |d x2|, |d y2|`` of a matched pair (pixels).
        max_score: largest ``|d score|`` of a matched pair.
        map50_95_reference, map50_95: COCO mAP50:95 (boxes) of the fp32 file and of ``file``.
        map50_95_delta, map50_delta: ``file`` minus fp32 (negative: worse), at 0.5:0.95 and 0.5.
        seconds: wall time of the comparison.
    """

    file: str
    reference: str
    split: str
    images: int
    threshold: float
    matched: int
    unmatched: int
    max_box_px: float
    max_score: float
    map50_95_reference: float
    map50_95: float
    map50_95_delta: float
    map50_delta: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields."""
        return asdict(self)

    def summary(self) -> str:
        """One line for logs and the CLI."""
        return (
            f"{self.file} vs {self.reference} on {self.images} {self.split} images: mAP50:95 "
            f"{self.map50_95:.4f} vs {self.map50_95_reference:.4f} (delta "
            f"{self.map50_95_delta:+.4f}); max box deviation {self.max_box_px:.2f} px, max score "
            f"deviation {self.max_score:.4f} over {self.matched} detections >= {self.threshold}, "
            f"{self.unmatched} unmatched"
        )


def compare_on_dataset(
    reference: Any,
    candidate: Any,
    dataset_dir: str | os.PathLike[str],
    *,
    split: str = "valid",
    threshold: float = 0.3,
) -> AccuracyReport:
    """Run both runtimes (`ONNXRuntimeModel`-like) on ``split`` and compare (module docstring).

    Raises:
        DatasetError: the split is missing or unusable.
    """
    from rfdetr.data import build_dataset, coco_ground_truth, dataset_class_map
    from rfdetr.evaluation.coco import score_predictions
    from rfdetr.evaluation.predictions import predict_dataset_models

    started = time.perf_counter()
    meta = reference.metadata
    dataset = build_dataset(
        dataset_dir,
        split,
        meta.resolution,
        train=False,
        segmentation=meta.segmentation,
        class_map=dataset_class_map(dataset_dir),
    )
    ground_truth = coco_ground_truth(dataset)
    predictions = predict_dataset_models(  # boxes only; the candidate's metadata is the fp32's
        [reference, candidate], dataset, postprocess=reference.postprocess, batch_size=1
    )
    results = [score_predictions(ground_truth, found).bbox for found in predictions]
    matched, unmatched, box, score = _deviations(*predictions, threshold)
    return AccuracyReport(
        file=candidate.path.name,
        reference=reference.path.name,
        split=dataset.split,
        images=len(dataset),
        threshold=threshold,
        matched=matched,
        unmatched=unmatched,
        max_box_px=box,
        max_score=score,
        map50_95_reference=results[0].map_50_95,
        map50_95=results[1].map_50_95,
        map50_95_delta=results[1].map_50_95 - results[0].map_50_95,
        map50_delta=results[1].map_50 - results[0].map_50,
        seconds=round(time.perf_counter() - started, 1),
    )


def _deviations(
    reference: list, candidate: list, threshold: float
) -> tuple[int, int, float, float]:
    matched = unmatched = 0
    box = score = 0.0
    for ref, got in zip(reference, candidate, strict=True):
        for i in np.flatnonzero(ref.scores >= threshold):
            same = np.flatnonzero(got.labels == ref.labels[i])
            ious = box_iou(
                torch.from_numpy(ref.boxes[i : i + 1]), torch.from_numpy(got.boxes[same])
            )[0][0].numpy()
            if not len(ious) or ious.max() < MATCH_IOU:
                unmatched += 1
                continue
            j = same[int(ious.argmax())]
            matched += 1
            box = max(box, float(np.abs(ref.boxes[i] - got.boxes[j]).max()))
            score = max(score, abs(float(ref.scores[i]) - float(got.scores[j])))
    return matched, unmatched, box, score


def write_report(report: AccuracyReport, model_path: Path) -> Path:
    """Write ``report`` to ``<file>.accuracy.json`` (returned) and into the model's metadata
    under ``accuracy`` (ONNX ``metadata_props``, OpenVINO ``rt_info``)."""
    import onnx

    target = model_path.with_name(model_path.name + ".accuracy.json")
    write_atomic(target, (json.dumps(report.to_dict(), indent=2) + "\n").encode())
    props = {"accuracy": json.dumps(report.to_dict())}
    if model_path.suffix == ".xml":
        add_rt_info(model_path, props)
    if model_path.suffix == ".onnx":
        model = onnx.load(str(model_path))
        copy_header(model, model, props)
        write_atomic(model_path, model.SerializeToString())
    return target
