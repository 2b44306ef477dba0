"""The CUDA provider check of ``ONNXRuntimeModel``: a session that fell back to the CPU is told.

onnxruntime-gpu lists ``CUDAExecutionProvider`` in ``get_available_providers()`` whether or not
it can start it; the CPU package here has no CUDA provider, so listing it (as onnxruntime-gpu
does) makes ONNX Runtime itself take the very fallback path a mismatched CUDA build takes:
``InferenceSession`` warns and keeps only ``CPUExecutionProvider``
(onnxruntime/python/onnxruntime_inference_collection.py, ``_create_inference_session``).
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

from rfdetr.export import ONNXRuntimeModel


def test_cuda_request_that_fell_back_to_the_cpu_is_reported(
    detector_onnx: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    monkeypatch.setattr(ort, "preload_dlls", lambda *a, **k: None, raising=False)
    onnxruntime_warning = pytest.warns(UserWarning, match="CUDAExecutionProvider")
    with caplog.at_level("WARNING", logger="rfdetr.export.runtime"), onnxruntime_warning:
        runtime = ONNXRuntimeModel(detector_onnx, threads=1, device="cuda")
    assert runtime.providers == ["CPUExecutionProvider"]
    assert "could not start its CUDA provider" in caplog.text and str(detector_onnx) in caplog.text


def test_cpu_sessions_are_not_reported(
    detector_onnx: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="rfdetr.export.runtime"):
        runtime = ONNXRuntimeModel(detector_onnx, threads=1)
    assert runtime.providers == ["CPUExecutionProvider"] and caplog.text == ""
