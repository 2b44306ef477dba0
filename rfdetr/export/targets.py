"""Other precisions and runtimes, derived from the verified fp32 ONNX file.

``quantize="int8"`` writes ``rfdetr-<size>.int8.onnx`` (`rfdetr.export.quantize`);
``format="openvino"`` converts the file to use to an OpenVINO IR (`rfdetr.export.openvino`).
Every derived file is measured against the fp32 ONNX file on the calibration dataset's
validation split (`rfdetr.export.accuracy`): the report lies beside it and in its metadata. An
fp32 IR is also checked against ONNX Runtime on random inputs (`FP32_ATOL`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rfdetr.export.accuracy import AccuracyReport, compare_on_dataset, write_report
from rfdetr.export.onnx import ExportError
from rfdetr.export.quantize import QuantizeResult, calibration_images, preprocessed, quantize_onnx
from rfdetr.export.verify import ExportVerificationError

logger = logging.getLogger(__name__)

QUANTIZE_CHOICES = ("int8",)
FORMATS = ("onnx", "openvino")


@dataclass(frozen=True)
class Target:
    """What to derive: ``quantize`` (None or ``int8``), ``format`` and the calibration data."""

    quantize: str | None = None
    format: str = "onnx"
    calibration: Path | None = None
    files: tuple[Path, ...] = ()

    @property
    def derived(self) -> bool:
        """True when anything beyond the fp32 ONNX file is asked for."""
        return self.quantize is not None or self.format != "onnx"


def check_target(
    quantize: str | None,
    calibration: str | os.PathLike[str] | None,
    fmt: str,
    class_names: list[str],
) -> Target:
    """Validate the options before anything is exported (bad input fails at once).

    Raises:
        ExportError: an unknown option, int8 without a calibration dataset, no OpenVINO.
        CalibrationError: the dataset is empty or has other classes. DatasetError: it is not
            a usable COCO/YOLO folder, or has no validation split.
    """
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise ExportError(f"quantize must be one of {QUANTIZE_CHOICES} or None, got {quantize!r}")
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {FORMATS}, got {fmt!r}")
    if quantize and calibration is None:
        raise ExportError(
            "quantize='int8' needs a calibration dataset (--calibration DATASET_DIR): its train "
            "images calibrate the ranges, its valid images measure the mAP change"
        )
    if calibration is not None and quantize is None and fmt == "onnx":
        raise ExportError(
            "calibration= is only used with quantize='int8' or format='openvino'; drop it or "
            "add one of them"
        )
    if fmt == "openvino":
        from rfdetr.export.openvino import _openvino

        _openvino()
    if calibration is None:
        return Target(quantize, fmt)
    from rfdetr.data import build_dataset

    files = calibration_images(calibration, class_names)
    build_dataset(calibration, "valid", 32, train=False)  # the split the report needs exists
    return Target(quantize, fmt, Path(calibration), tuple(files))


def build_target(
    fp32: Path, target: Target
) -> tuple[Path, QuantizeResult | None, AccuracyReport | None]:
    """Write the derived file(s) next to ``fp32``; returns (file to use, int8 result, report).

    Raises:
        ExportVerificationError: an fp32 OpenVINO IR differs from ONNX Runtime beyond
            ``FP32_ATOL``.
    """
    from rfdetr.export.runtime import ONNXRuntimeModel

    path, quantized, runtime = fp32, None, None
    if target.quantize:
        inputs = preprocessed(list(target.files), fp32)
        quantized = quantize_onnx(fp32, fp32.with_name(f"{fp32.stem}.int8.onnx"), inputs)
        path = quantized.path
        runtime = ONNXRuntimeModel(path)
    reference = ONNXRuntimeModel(fp32)
    if target.format == "openvino":
        from rfdetr.export.openvino import OpenVINOModel, export_openvino

        path = export_openvino(path)
        runtime = OpenVINOModel(path)
        if not target.quantize:
            _check_fp32(reference, runtime)
    if runtime is None or target.calibration is None:
        return path, quantized, None
    report = compare_on_dataset(reference, runtime, target.calibration)
    write_report(report, path)
    logger.info(report.summary())
    return path, quantized, report


def _check_fp32(reference: object, runtime: object, seed: int = 0) -> None:
    from rfdetr.export.openvino import FP32_ATOL

    height, width = reference.metadata.input_shape
    images = np.random.default_rng(seed).standard_normal((2, 3, height, width), np.float32)
    want, got = reference.run(images), runtime.run(images)
    worst = {name: float(np.abs(want[name] - got[name]).max()) for name in want}
    if any(value > FP32_ATOL for value in worst.values()):
        raise ExportVerificationError(
            f"{runtime.path}: OpenVINO differs from ONNX Runtime by {worst} (tolerance "
            f"{FP32_ATOL}); the file is kept for inspection"
        )
    logger.info("%s: OpenVINO vs ONNX Runtime, batch 2: %s: OK", runtime.path.name, worst)
