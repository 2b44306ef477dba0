"""``predict(backend="onnxruntime")`` and `ONNXRuntimeModel` give the PyTorch detections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import torch

from rfdetr.api import RFDETRModel
from rfdetr.export import ONNXRuntimeModel


def _assert_same(a: sv.Detections, b: sv.Detections) -> None:
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)
    np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-5)
    np.testing.assert_array_equal(a.class_id, b.class_id)
    np.testing.assert_array_equal(a.data["class_name"], b.data["class_name"])
    if a.mask is not None or b.mask is not None:
        assert a.mask.shape == b.mask.shape and (a.mask == b.mask).mean() > 0.999


@pytest.mark.parametrize("fixture", ["detector", "segmenter"])
def test_onnxruntime_backend_equals_torch(
    fixture: str, request: pytest.FixtureRequest, rgb: np.ndarray
) -> None:
    model: RFDETRModel = request.getfixturevalue(fixture)
    images = [rgb, rgb[::2]]
    expected = model.predict(images, threshold=0.0)
    got = model.predict(images, threshold=0.0, backend="onnxruntime")
    for a, b in zip(got, expected, strict=True):
        _assert_same(a, b)
    strict = model.predict(rgb, threshold=0.5, backend="onnxruntime")
    assert len(strict) == len(model.predict(rgb, threshold=0.5))


def test_a_given_file_and_the_standalone_runtime(
    detector: RFDETRModel, detector_onnx: Path, rgb: np.ndarray
) -> None:
    expected = detector.predict(rgb, threshold=0.0)
    _assert_same(
        detector.predict(rgb, threshold=0.0, onnx_path=detector_onnx, backend="onnxruntime"),
        expected,
    )
    runtime = ONNXRuntimeModel(detector_onnx, threads=2)
    assert runtime.class_names == ["cat", "dog", "cow"]
    _assert_same(runtime.predict(rgb, threshold=0.0), expected)
    batch = runtime.predict([rgb, rgb], threshold=0.0, batch_size=1)
    assert isinstance(batch, list) and len(batch) == 2


def test_cached_export_follows_weight_changes(rgb: np.ndarray, tiny) -> None:
    model = tiny.perturbed(tiny.detector_class, seed=3)
    first = model.predict(rgb, threshold=0.0, backend="onnxruntime")
    again = model.predict(rgb, threshold=0.0, backend="onnxruntime")
    _assert_same(first, again)
    cached = model._onnx_runtime[1]
    assert (
        model.predict(rgb, backend="onnxruntime") is not None and model._onnx_runtime[1] is cached
    )
    with torch.no_grad():
        model.model.class_embed.bias.add_(1.0)  # in place, as an optimizer step would
    updated = model.predict(rgb, threshold=0.0, backend="onnxruntime")
    assert model._onnx_runtime[1] is not cached
    _assert_same(updated, model.predict(rgb, threshold=0.0))


def test_bad_backend_and_missing_file(
    detector: RFDETRModel, rgb: np.ndarray, tmp_path: Path
) -> None:
    with pytest.raises(
        ValueError, match="backend must be 'torch', 'onnxruntime' or 'openvino', got 'tensorrt'"
    ):
        detector.predict(rgb, backend="tensorrt")
    with pytest.raises(FileNotFoundError, match="no such ONNX file"):
        detector.predict(rgb, backend="onnxruntime", onnx_path=tmp_path / "missing.onnx")


def test_cuda_device_selects_the_cuda_provider_when_onnxruntime_has_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import onnxruntime as ort

    from rfdetr.export.verify import execution_providers

    preloaded: list[bool] = []
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    monkeypatch.setattr(ort, "preload_dlls", lambda: preloaded.append(True), raising=False)
    assert execution_providers("cuda:1") == [
        ("CUDAExecutionProvider", {"device_id": 1}),
        "CPUExecutionProvider",
    ]
    assert preloaded == [True]  # CUDA libraries from the nvidia-* wheels, before the session
    assert execution_providers(torch.device("cpu")) == ["CPUExecutionProvider"]
    assert preloaded == [True]


def test_cuda_device_without_a_cuda_provider_runs_on_the_cpu_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import onnxruntime as ort

    from rfdetr.export.verify import execution_providers

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with caplog.at_level("WARNING", logger="rfdetr.export.verify"):
        assert execution_providers("cuda") == ["CPUExecutionProvider"]
    assert "no CUDA provider (install onnxruntime-gpu" in caplog.text


def test_a_file_that_is_no_onnx_model_is_a_one_line_user_error(
    detector_onnx: Path, tmp_path: Path
) -> None:
    """ONNX Runtime's own refusal (``InvalidProtobuf``/``Fail`` from ``InferenceSession``, a
    multi-line message without the file's name) becomes one line naming the file, exit 2."""
    from rfdetr.errors import UserError

    text = tmp_path / "text.onnx"
    text.write_text("not a model\n")
    cut = tmp_path / "cut.onnx"  # an interrupted copy of a real export
    cut.write_bytes(detector_onnx.read_bytes()[:4096])
    for path in (text, cut):
        with pytest.raises(UserError) as caught:
            ONNXRuntimeModel(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: ONNX Runtime cannot load it ("), message
        assert "\n" not in message and caught.value.exit_code == 2
