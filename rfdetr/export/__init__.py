"""ONNX export and ONNX Runtime inference for RF-DETR models.

>>> from rfdetr import RFDETRNano
>>> path = RFDETRNano().export("output")            # output/rfdetr-nano.onnx, verified
>>> from rfdetr.export import ONNXRuntimeModel
>>> detections = ONNXRuntimeModel(path).predict("image.jpg")

Names are imported on first use, so importing this package loads neither onnx nor onnxruntime.
"""

from __future__ import annotations

from rfdetr.utils.lazy import lazy_names

_LAZY: dict[str, str] = {
    "ExportError": "rfdetr.export.onnx",
    "ExportVerificationError": "rfdetr.export.verify",
    "verify_onnx": "rfdetr.export.verify",
    "read_metadata": "rfdetr.export.metadata",
    "ONNXRuntimeModel": "rfdetr.export.runtime",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
