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
    "ExportModule": "rfdetr.export.graph",
    "TopKPostProcess": "rfdetr.export.graph",
    "ExportError": "rfdetr.export.onnx",
    "export_onnx": "rfdetr.export.onnx",
    "simplify_onnx": "rfdetr.export.onnx",
    "ExportVerificationError": "rfdetr.export.verify",
    "VerifyReport": "rfdetr.export.verify",
    "verify_onnx": "rfdetr.export.verify",
    "ExportResult": "rfdetr.export.exporter",
    "export_model": "rfdetr.export.exporter",
    "ExportMetadata": "rfdetr.export.metadata",
    "MetadataError": "rfdetr.export.metadata",
    "read_metadata": "rfdetr.export.metadata",
    "ONNXRuntimeModel": "rfdetr.export.runtime",
    "OpenVINOModel": "rfdetr.export.openvino",
    "export_openvino": "rfdetr.export.openvino",
    "CalibrationError": "rfdetr.export.quantize",
    "QuantizeResult": "rfdetr.export.quantize",
    "quantize_onnx": "rfdetr.export.quantize",
    "AccuracyReport": "rfdetr.export.accuracy",
    "compare_on_dataset": "rfdetr.export.accuracy",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
