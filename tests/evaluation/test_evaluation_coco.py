"""CocoMetrics equals pycocotools' own ``stats``; evaluate_model runs a model end to end."""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from rfdetr.data.normalize import normalize_images
from rfdetr.evaluation.coco import (
    CocoMetrics,
    evaluate_model,
    evaluate_models,
    score_predictions,
)
from rfdetr.evaluation.predictions import (
    ImagePredictions,
    predict_dataset,
    predict_dataset_models,
    to_coco_results,
)


def reference_stats(gt: dict[str, Any], results: list[dict], iou_type: str) -> np.ndarray:
    """Stock pycocotools: default params, summarize()."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(results), iou_type)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats


@pytest.mark.parametrize("max_dets", [100, 500])
def test_evaluation_stats_equal_pycocotools(fixed_case, max_dets: int) -> None:
    gt, predictions = fixed_case
    result = score_predictions(
        gt, predictions, segmentation=True, max_dets=max_dets, backend="pycocotools"
    )
    for iou_type, metrics in (("bbox", result.bbox), ("segm", result.segm)):
        expected = reference_stats(gt, to_coco_results(predictions, iou_type == "segm"), iou_type)
        assert metrics is not None
        assert metrics.as_stats() == expected.tolist(), iou_type  # exact, every statistic
    assert result.bbox.map_50_95 != result.segm.map_50_95  # masks are scored, not boxes
    assert 0.0 < result.bbox.map_50 < 1.0


def test_evaluation_max_dets_cuts_per_image_detections(fixed_case) -> None:
    """With more than 100 detections per image, stock pycocotools' 100 and upstream's 500
    differ; at max_dets=100 the numbers are still pycocotools' exactly."""
    gt, predictions = fixed_case
    crowded = []
    for pred in predictions:
        extra = 120
        boxes = np.tile(np.array([[1.0, 1.0, 9.0, 9.0]], dtype=np.float32), (extra, 1))
        crowded.append(
            ImagePredictions(
                index=pred.index,
                image_id=pred.image_id,
                height=pred.height,
                width=pred.width,
                scores=np.concatenate([np.full(extra, 0.999, np.float32), pred.scores]),
                labels=np.concatenate([np.zeros(extra, np.int64), pred.labels]),
                boxes=np.concatenate([boxes, pred.boxes]),
            )
        )
    at_100 = score_predictions(gt, crowded, max_dets=100, backend="pycocotools")
    at_500 = score_predictions(gt, crowded, max_dets=500, backend="pycocotools")
    expected = reference_stats(gt, to_coco_results(crowded, False), "bbox")
    assert at_100.bbox.as_stats() == expected.tolist()
    assert at_500.bbox.map_50_95 > at_100.bbox.map_50_95
    assert at_500.bbox.ar_100 == at_100.bbox.ar_100


def test_evaluation_no_detections_scores_zero(fixed_case) -> None:
    gt, predictions = fixed_case
    empty = [
        ImagePredictions(
            p.index, p.image_id, p.height, p.width, p.scores[:0], p.labels[:0], p.boxes[:0]
        )
        for p in predictions
    ]
    result = score_predictions(gt, empty, backend="pycocotools")
    assert result.bbox.map_50_95 == 0.0
    assert result.f1 == 0.0
    assert result.confusion_matrix[-1][:-1] == [0, 0, 0]  # no false positives
    objects = [0, 0, 0]
    for ann in gt["annotations"]:
        objects[ann["category_id"]] += 0 if ann["iscrowd"] else 1
    assert [row[-1] for row in result.confusion_matrix[:-1]] == objects  # every object missed
    assert [c.num_gt for c in result.per_class] == objects


def test_evaluation_metrics_to_dict_names_every_field() -> None:
    metrics = CocoMetrics(*[i / 20 for i in range(12)])
    assert list(metrics.to_dict()) == [
        "map_50_95", "map_50", "map_75", "map_small", "map_medium", "map_large",
        "ar_1", "ar_10", "ar_100", "ar_small", "ar_medium", "ar_large",
    ]  # fmt: skip
    assert metrics.as_stats() == [i / 20 for i in range(12)]


def test_evaluation_evaluate_model_end_to_end(tmp_path, tiny_seg_model, seg_dataset) -> None:
    """evaluate_model = predict_dataset + score_predictions; the model's mode is restored, and
    the chunked mask selection equals PostProcess's own masks."""
    model, postprocess = tiny_seg_model
    model.train()
    result = evaluate_model(
        model, seg_dataset, postprocess=postprocess, segmentation=True, batch_size=2,
        backend="pycocotools",
    )  # fmt: skip
    assert model.training
    assert result.segm is not None and result.primary is result.segm
    assert [c.category_id for c in result.per_class] == [1, 2]
    assert [c.name for c in result.per_class] == ["cat", "dog"]
    # batch_size=1 like the reference below: a batch of 3 and a batch of 1 agree only to ~5e-7
    predictions = predict_dataset(
        model, seg_dataset, postprocess=postprocess, segmentation=True, batch_size=1
    )
    image, target = seg_dataset[0]
    with torch.inference_mode():
        outputs = model.eval()(normalize_images(image[None]))
        reference = postprocess(outputs, target["orig_size"][None])[0]
    assert np.array_equal(predictions[0].scores, reference["scores"].numpy())
    assert np.array_equal(predictions[0].decoded_masks(), reference["masks"].numpy())


def test_evaluation_evaluate_models_one_pass_equals_each(tiny_seg_model, seg_dataset) -> None:
    """The training loop scores its regular and EMA models in one pass over the validation
    images (rfdetr/training/outputs.py finish_epoch): each model's result must be exactly what
    its own evaluate_model call gives, and each model's train/eval mode is restored."""
    model, postprocess = tiny_seg_model
    other = copy.deepcopy(model)
    with torch.no_grad():  # a second model with other detections, like an EMA copy
        for parameter in other.parameters():
            parameter.mul_(0.9)
    model.train()
    other.eval()
    options = dict(postprocess=postprocess, segmentation=True, batch_size=2, backend="pycocotools")
    together = evaluate_models([model, other], seg_dataset, **options)
    assert model.training and not other.training
    alone = [evaluate_model(m, seg_dataset, **options) for m in (model, other)]
    assert [r.to_dict() for r in together] == [r.to_dict() for r in alone]
    found = predict_dataset_models([model, other], seg_dataset, postprocess=postprocess)
    references = alone_predictions(model, other, seg_dataset, postprocess)
    for predictions, single in zip(found, references, strict=True):
        assert [p.image_id for p in predictions] == [p.image_id for p in single]
        pairs = zip(predictions, single, strict=True)
        assert all(np.array_equal(a.scores, b.scores) for a, b in pairs)
    assert not np.array_equal(found[0][0].scores, found[1][0].scores)


def alone_predictions(*models_and_data: Any) -> list[list[ImagePredictions]]:
    """predict_dataset of each model on its own (the reference of the one-pass run)."""
    *models, dataset, postprocess = models_and_data
    return [predict_dataset(m, dataset, postprocess=postprocess) for m in models]
