"""Per-class numbers, the confidence sweep and the confusion matrix on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rfdetr.data import build_dataset
from rfdetr.evaluation.analysis import confusion_matrix
from rfdetr.evaluation.coco import evaluate_model, score_predictions
from rfdetr.evaluation.cocoeval import run_matching
from rfdetr.evaluation.predictions import ImagePredictions
from rfdetr.models.postprocess import PostProcess


def _gt(boxes: list[tuple[int, list[float]]], num_images: int) -> dict:
    images = [
        {"id": i, "file_name": f"{i}.jpg", "width": 100, "height": 100} for i in range(num_images)
    ]
    annotations = [
        {
            "id": n + 1,
            "image_id": image,
            "category_id": 0,
            "bbox": box,
            "area": box[2] * box[3],
            "iscrowd": 0,
        }
        for n, (image, box) in enumerate(boxes)
    ]
    categories = [{"id": 0, "name": "a", "source_id": 4}, {"id": 1, "name": "b", "source_id": 8}]
    return {"images": images, "annotations": annotations, "categories": categories}


def _pred(image: int, dets: list[tuple[float, int, list[float]]]) -> ImagePredictions:
    dets = sorted(dets, key=lambda d: -d[0])
    return ImagePredictions(
        index=image,
        image_id=image,
        height=100,
        width=100,
        scores=np.array([d[0] for d in dets], dtype=np.float32),
        labels=np.array([d[1] for d in dets], dtype=np.int64),
        boxes=np.array([d[2] for d in dets], dtype=np.float32).reshape(-1, 4),
    )


def test_evaluation_threshold_maximises_macro_f1() -> None:
    """Class a: 4 objects; detections 0.9 TP, 0.8 TP, 0.6 FP, 0.45 TP, 0.25 FP. By hand, F1 is
    0.667 (t <= .25), 0.75 (.25 < t <= .45), 0.571, 0.667, 0.4: the best threshold is the first
    grid point above 0.25. Class b has no ground truth: its false positive (0.95) is left out
    of the macro average but shows in the confusion matrix."""
    gt = _gt(
        [
            (0, [10, 10, 20, 20]),
            (1, [10, 10, 20, 20]),
            (2, [10, 10, 20, 20]),
            (3, [50, 50, 30, 30]),
        ],
        4,
    )
    predictions = [
        _pred(
            0, [(0.9, 0, [10, 10, 30, 30]), (0.6, 0, [60, 60, 90, 90]), (0.95, 1, [70, 0, 99, 20])]
        ),
        _pred(1, [(0.8, 0, [11, 10, 31, 30]), (0.25, 0, [70, 70, 95, 95])]),
        _pred(2, [(0.45, 0, [10, 11, 30, 31])]),
        _pred(3, []),
    ]
    result = score_predictions(gt, predictions, backend="pycocotools")
    assert result.confidence_threshold == pytest.approx(0.26)
    assert (result.precision, result.recall, result.f1) == pytest.approx((0.75, 0.75, 0.75))
    f1 = dict(zip(np.round(result.curves.thresholds, 2), result.curves.macro_f1, strict=True))
    assert f1[0.25] == pytest.approx(2 / 3) and f1[0.5] == pytest.approx(4 / 7)
    assert f1[0.7] == pytest.approx(2 / 3) and f1[0.85] == pytest.approx(0.4) and f1[0.95] == 0.0
    a, b = result.per_class
    assert (a.category_id, a.name, a.num_gt, a.precision, a.recall) == (4, "a", 4, 0.75, 0.75)
    assert (b.category_id, b.num_gt, b.ap_50_95) == (8, 0, -1.0)
    # rows: true a, b, background; columns: predicted a, b, background
    assert result.confusion_matrix == [[3, 0, 1], [0, 0, 0], [1, 1, 0]]


def test_evaluation_ties_pick_the_lowest_threshold() -> None:
    gt = _gt([(0, [10, 10, 20, 20])], 1)
    result = score_predictions(gt, [_pred(0, [(0.5, 0, [10, 10, 30, 30])])], backend="pycocotools")
    assert result.confidence_threshold == 0.0 and result.f1 == 1.0


class _FixedDetector(nn.Module):
    """Two queries per image, the same for every image: the cat box called "cat" (0.9) and the
    dog box also called "cat" (0.65, dog 0.1; PostProcess(num_select=2) keeps the two cats).
    Boxes normalised cxcywh for 64 x 64 images."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # so .to() and .eval() behave as usual
        logit = torch.logit(torch.tensor([[0.9, 0.01, 0.0], [0.65, 0.1, 0.0]]))
        self.register_buffer("logits", logit)
        cat, dog = (4, 8, 24, 22), (34, 30, 26, 28)
        boxes = [[(x + w / 2) / 64, (y + h / 2) / 64, w / 64, h / 64] for x, y, w, h in (cat, dog)]
        self.register_buffer("boxes", torch.tensor(boxes))
        self.calls: list[tuple[int, bool, bool]] = []  # (batch, inference mode, training)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = images.shape[0]
        self.calls.append((batch, torch.is_inference_mode_enabled(), self.training))
        return {
            "pred_logits": self.logits.expand(batch, -1, -1),
            "pred_boxes": self.boxes.expand(batch, -1, -1),
        }


def test_evaluation_per_class_right_and_wrong_classes(tmp_path, helpers) -> None:
    """Cats are always found; dogs are always called cats. Reported against the dataset's own
    category ids (5 and 11, after a Roboflow superclass 0)."""
    categories = [
        {"id": 0, "name": "pets", "supercategory": "none"},
        {"id": 5, "name": "cat", "supercategory": "pets"},
        {"id": 11, "name": "dog", "supercategory": "pets"},
    ]
    root = helpers.write_coco_dataset(
        tmp_path / "pets", {"train": 1, "valid": 4}, categories=categories
    )
    dataset = build_dataset(root, "valid", 64, train=False)
    model = _FixedDetector()
    result = evaluate_model(
        model, dataset, postprocess=PostProcess(num_select=2), batch_size=3, backend="pycocotools"
    )
    assert model.calls == [(3, True, False), (1, True, False)]  # batched, inference mode, eval
    assert model.training  # restored
    cat, dog = result.per_class
    assert (cat.category_id, cat.name, cat.ap_50_95, cat.ap_50) == (5, "cat", 1.0, 1.0)
    assert (dog.category_id, dog.name, dog.ap_50_95, dog.ap_50) == (11, "dog", 0.0, 0.0)
    assert (cat.num_gt, dog.num_gt) == (4, 4)
    assert (cat.recall, dog.recall, dog.precision) == (1.0, 0.0, 0.0)
    assert result.bbox.map_50 == pytest.approx(0.5)
    # the best threshold (macro F1 0.5) drops the dogs called cats (0.65): dogs are all missed
    assert 0.64 <= result.confidence_threshold <= 0.66  # the first grid point above ~0.65
    assert result.confusion_matrix == [[4, 0, 0], [0, 0, 4], [0, 0, 0]]


def test_evaluation_confusion_matrix_counts_wrong_labels_and_crowd() -> None:
    """A box of class a called b lands off the diagonal; a detection on a crowd region is not
    a false positive; a low-scoring detection is below the threshold."""
    gt = _gt([(0, [10, 10, 20, 20]), (0, [50, 50, 20, 20])], 1)
    gt["annotations"][1]["iscrowd"] = 1
    results = [
        {"image_id": 0, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9},
        {"image_id": 0, "category_id": 0, "bbox": [52, 52, 16, 16], "score": 0.8},
        {"image_id": 0, "category_id": 0, "bbox": [80, 0, 10, 10], "score": 0.1},
    ]
    matches = run_matching(gt, results, "bbox")
    assert confusion_matrix(matches, 0.5).tolist() == [[0, 1, 0], [0, 0, 0], [0, 0, 0]]
    assert confusion_matrix(matches, 0.05).tolist() == [[0, 1, 0], [0, 0, 0], [1, 0, 0]]


def test_evaluation_faster_backend_same_numbers(fixed_case) -> None:
    pytest.importorskip(
        "faster_coco_eval", reason="optional backend faster-coco-eval not installed"
    )
    gt, predictions = fixed_case
    ref = score_predictions(gt, predictions, segmentation=True, backend="pycocotools")
    fast = score_predictions(gt, predictions, segmentation=True, backend="faster-coco-eval")
    assert fast.backend == "faster-coco-eval"
    for kind in ("bbox", "segm"):
        # the C++ accumulation may round the last bit differently
        assert getattr(fast, kind).as_stats() == pytest.approx(
            getattr(ref, kind).as_stats(), abs=1e-12
        )
    for mine, theirs in zip(fast.per_class, ref.per_class, strict=True):
        assert mine.ap_50_95 == pytest.approx(theirs.ap_50_95, abs=1e-12)
        assert mine.mask_ap_50 == pytest.approx(theirs.mask_ap_50, abs=1e-12)
        assert (mine.precision, mine.recall, mine.f1) == (
            theirs.precision,
            theirs.recall,
            theirs.f1,
        )
    assert fast.confusion_matrix == ref.confusion_matrix
    assert fast.confidence_threshold == ref.confidence_threshold
