"""The ``with_postprocess`` graph gives what ``predict()`` gives: boxes, scores, ids, masks."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch

from rfdetr.api import RFDETRModel
from rfdetr.export import ONNXRuntimeModel, read_metadata, verify_onnx
from rfdetr.export.verify import make_session
from rfdetr.inference import preprocess, to_float_chw
from rfdetr.models.postprocess import PostProcess, resize_masks


def _run(path: Path, model: RFDETRModel, images: list[np.ndarray]) -> dict[str, np.ndarray]:
    tensors = [to_float_chw(image) for image in images]
    batch, sizes = preprocess(tensors, model.resolution, torch.device("cpu"))
    session = make_session(path)
    feed = {"input": batch.numpy(), "orig_size": sizes.numpy().astype(np.int64)}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feed), strict=True))


def test_detection_postprocess_equals_predict(
    detector: RFDETRModel, rgb: np.ndarray, tmp_path: Path
) -> None:
    path = detector.export(tmp_path, with_postprocess=True)
    assert path.name == "rfdetr-tiny-postprocess.onnx"
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input", "orig_size"]
    assert [o.name for o in graph.output] == ["boxes", "scores", "class_ids"]
    assert read_metadata(path).with_postprocess
    images = [rgb, rgb[:30, 10:]]
    got = _run(path, detector, images)
    expected = detector.predict(images, threshold=0.0)
    assert got["boxes"].shape == (2, 10, 4) and got["class_ids"].dtype == np.int64
    for i, det in enumerate(expected):
        np.testing.assert_allclose(got["scores"][i], det.confidence, atol=1e-5)
        np.testing.assert_array_equal(got["class_ids"][i], det.class_id)
        np.testing.assert_allclose(got["boxes"][i], det.xyxy, atol=1e-3)
    assert (got["boxes"][1][:, [0, 2]] <= 60).all() and (got["boxes"][1][:, [1, 3]] <= 30).all()


def test_segmentation_postprocess_masks_match_predict(
    segmenter: RFDETRModel, rgb: np.ndarray, tmp_path: Path
) -> None:
    path = segmenter.export(tmp_path, with_postprocess=True)
    report = verify_onnx(path, segmenter.model, postprocess=segmenter.postprocess)
    assert report.passed and {"scores", "boxes", "masks"} <= set(report.max_abs_diff)
    got = _run(path, segmenter, [rgb])
    expected = segmenter.predict(rgb, threshold=0.0)
    assert got["masks"].shape == (1, 10, 16, 16)
    np.testing.assert_array_equal(got["class_ids"][0], expected.class_id)
    masks = resize_masks(torch.from_numpy(got["masks"][0]), (50, 70)).numpy()
    assert masks.shape == expected.mask.shape
    assert (masks == expected.mask).mean() > 0.999


def test_runtime_refuses_a_postprocess_graph(detector: RFDETRModel, tmp_path: Path) -> None:
    path = detector.export(tmp_path, with_postprocess=True, verify=False)
    with pytest.raises(ValueError, match="a --with-postprocess graph") as info:
        ONNXRuntimeModel(path)
    assert "\n" not in str(info.value)


def test_logit_columns_of_coco_style_heads(
    tiny: SimpleNamespace, rgb: np.ndarray, tmp_path: Path
) -> None:
    """Heads whose columns are dataset ids (COCO weights): the graph picks the same columns."""
    model = tiny.perturbed(tiny.detector_class, seed=5)
    model.postprocess = PostProcess(model.config.num_select, class_columns=[3, 0, 2])
    model.dataset_ids = [3, 0, 2]
    path = model.export(tmp_path, with_postprocess=True)
    meta = read_metadata(path)
    assert meta.logit_columns == [3, 0, 2] and meta.dataset_ids == [3, 0, 2]
    got = _run(path, model, [rgb])
    expected = model.predict(rgb, threshold=0.0)
    np.testing.assert_array_equal(got["class_ids"][0], expected.class_id)
    np.testing.assert_allclose(got["scores"][0], expected.confidence, atol=1e-5)


def test_num_select_above_300_agrees_with_onnx_runtime(
    tiny: SimpleNamespace, rgb: np.ndarray, tmp_path: Path
) -> None:
    """``num_select=500`` (upstream #203, #1031: more than 300 detections per image).

    200 queries x 3 classes give 600 candidate pairs, so all 500 are real top-k picks (no
    clamping); predict(), the raw ONNX graph through ONNX Runtime and the post-processed graph
    return the same 500 detections.
    """
    torch.manual_seed(7)
    model = tiny.detector_class(
        pretrain_weights=None,
        device="cpu",
        class_names=tiny.class_names,
        num_queries=200,
        num_select=500,
    )
    with torch.no_grad():
        for parameter in model.model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    expected = model.predict(rgb, threshold=0.0)
    assert len(expected) == 500
    raw = model.export(tmp_path)  # verified against PyTorch by export itself
    assert read_metadata(raw).num_select == 500
    got = model.predict(rgb, threshold=0.0, backend="onnxruntime", onnx_path=raw)
    np.testing.assert_array_equal(got.class_id, expected.class_id)
    np.testing.assert_allclose(got.confidence, expected.confidence, atol=1e-5)
    np.testing.assert_allclose(got.xyxy, expected.xyxy, atol=1e-3)
    graph = _run(model.export(tmp_path, with_postprocess=True), model, [rgb])
    assert graph["boxes"].shape == (1, 500, 4)
    np.testing.assert_array_equal(graph["class_ids"][0], expected.class_id)
    np.testing.assert_allclose(graph["scores"][0], expected.confidence, atol=1e-5)
    np.testing.assert_allclose(graph["boxes"][0], expected.xyxy, atol=1e-3)
