"""Per-class confidence thresholds in `predict()` (upstream 1.12's idea), eager and ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rfdetr.api import RFDETRModel


class TinyDetector(RFDETRModel):
    size = "tiny"


@pytest.fixture(scope="module")
def detector() -> TinyDetector:
    torch.manual_seed(2)
    model = TinyDetector(pretrain_weights=None, device="cpu", class_names=["cat", "dog", "cow"])
    with torch.no_grad():  # spread the scores: random init scores every query alike
        for parameter in model.model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model


def _expected(everything, per_class: dict[int, float]):
    limits = np.array([per_class[int(c)] for c in everything.class_id])
    return everything[everything.confidence > limits]


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_per_class_thresholds_keep_each_class_above_its_own(
    detector: TinyDetector, backend: str
) -> None:
    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    everything = detector.predict(image, threshold=0.0, backend=backend)
    present = sorted(set(everything.class_id.tolist()))
    assert len(present) >= 2, "the perturbed model should score at least two classes"
    dropped, cut = present[0], present[1]
    cut_scores = np.sort(everything.confidence[everything.class_id == cut])
    middle = float(cut_scores[len(cut_scores) // 2])  # keeps some rows of class `cut`, not all
    name = detector.class_names[dropped]
    got = detector.predict(image, threshold={name: 1.0, cut: middle, "*": 0.0}, backend=backend)
    limits = {c: 0.0 for c in range(3)} | {dropped: 1.0, cut: middle}
    want = _expected(everything, limits)
    assert 0 < len(got) < len(everything) and dropped not in set(got.class_id.tolist())
    np.testing.assert_array_equal(got.class_id, want.class_id)
    np.testing.assert_allclose(got.xyxy, want.xyxy)
    only_cut = detector.predict(image, threshold={cut: 0.0}, backend=backend)  # others: 0.5
    default = {c: 0.5 for c in range(3)} | {cut: 0.0}
    np.testing.assert_array_equal(only_cut.class_id, _expected(everything, default).class_id)


def test_bad_per_class_thresholds_are_one_line_errors(detector: TinyDetector) -> None:
    image = np.zeros((20, 20, 3), np.uint8)
    for threshold, message in (
        ({"horse": 0.3}, "not a class name or id"),
        ({7: 0.3}, "not a class name or id"),
        ({"cat": 1.5}, r"must be in \[0, 1\]"),
        (-0.1, r"must be in \[0, 1\]"),
    ):
        with pytest.raises(ValueError, match=message) as caught:
            detector.predict(image, threshold=threshold)
        assert "\n" not in str(caught.value)
