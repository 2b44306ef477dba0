"""`export_model`: what ``RFDETRModel.export()`` and ``rfdetr export`` run, on plain objects.

Writes ``rfdetr-<size>[-postprocess].onnx`` with metadata, verified against PyTorch, optionally
a ``.sim.onnx`` onnxslim copy; ``quantize``/``format`` derive an int8 file and/or an OpenVINO IR,
measured against the fp32 file on the calibration dataset (`rfdetr.export.accuracy`).
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rfdetr import __version__
from rfdetr.config import ModelConfig
from rfdetr.data.normalize import IMAGENET_MEAN, IMAGENET_STD
from rfdetr.export.accuracy import AccuracyReport, compare_on_dataset, write_report
from rfdetr.export.metadata import ExportMetadata
from rfdetr.export.onnx import ExportError, check_shape, export_onnx, simplify_onnx
from rfdetr.export.openvino import FP32_ATOL, OpenVINOModel, export_openvino, require_openvino
from rfdetr.export.quantize import QuantizeResult, calibration_images, preprocessed, quantize_onnx
from rfdetr.export.runtime import ONNXRuntimeModel
from rfdetr.export.verify import ExportVerificationError, VerifyReport, verify_onnx
from rfdetr.models.detector import RFDETR
from rfdetr.models.postprocess import PostProcess

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportResult:
    """Files written by `export_model` and their verification.

    Attributes:
        path: the file to use (the simplified one when ``simplify=True``).
        onnx_path: the exported file before simplification.
        reports: verification of each file written (empty when ``verify=False``).
        metadata: what the files' ``metadata_props`` hold.
        quantized: the int8 quantization (``quantize="int8"``), or None.
        accuracy: the derived file against the fp32 one on the validation images, or None.
    """

    path: Path
    onnx_path: Path
    reports: tuple[VerifyReport, ...]
    metadata: ExportMetadata
    quantized: QuantizeResult | None = None
    accuracy: AccuracyReport | None = None


def export_model(
    model: RFDETR,
    config: ModelConfig,
    class_names: list[str],
    output_dir: str | os.PathLike[str] = "output",
    *,
    dataset_ids: list[int] | None = None,
    class_columns: list[int] | None = None,
    opset_version: int = 17,
    dynamic_batch: bool = True,
    batch_size: int = 1,
    simplify: bool = False,
    shape: tuple[int, int] | None = None,
    with_postprocess: bool = False,
    verify: bool = True,
    quantize: str | None = None,
    calibration: str | os.PathLike[str] | None = None,
    format: str = "onnx",
) -> ExportResult:
    """Export ``model`` (built from ``config``, not modified) to ONNX in ``output_dir``.

    ``class_names`` and ``dataset_ids`` (each class id's dataset id; dropped unless one a name)
    go into the metadata; ``class_columns``: the ``pred_logits`` column of each class id where
    not the id (COCO-id heads). Other arguments and errors: `rfdetr.api.RFDETRModel.export`.
    """
    size = check_shape(shape, config.resolution, config.block_size)
    files = check_target(quantize, calibration, format, list(class_names))
    derived = quantize is not None or format != "onnx"
    if derived and with_postprocess:
        raise ExportError("quantize / format='openvino' need the raw-output graph (no postprocess)")
    model = copy.deepcopy(model).cpu().eval()
    same_head = dataset_ids is not None and len(dataset_ids) == len(class_names)
    metadata = ExportMetadata(
        model_name=config.name,
        task="segmentation" if config.segmentation_head else "detection",
        class_names=list(class_names),
        input_shape=size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        num_queries=config.num_queries,
        num_select=config.num_select,
        patch_size=config.patch_size,
        dynamic_batch=dynamic_batch,
        with_postprocess=with_postprocess,
        rfdetr_version=__version__,
        dataset_ids=list(dataset_ids) if same_head else None,
        logit_columns=list(class_columns) if class_columns is not None else None,
    )
    stem = f"rfdetr-{config.name}" + ("-postprocess" if with_postprocess else "")
    path = Path(output_dir) / f"{stem}.onnx"
    export_onnx(model, path, metadata=metadata, opset_version=opset_version, batch_size=batch_size)
    reference = PostProcess(config.num_select, class_columns) if with_postprocess else None
    reports = [verify_onnx(path, model, postprocess=reference)] if verify else []
    simplified = simplify_onnx(path, path.with_name(f"{stem}.sim.onnx")) if simplify else None
    if simplified is not None and verify:
        reports.append(verify_onnx(simplified, model, postprocess=reference))
    final, quantized, accuracy = simplified or path, None, None
    if derived:
        final, quantized, accuracy = build_target(final, quantize, format, calibration, files)
    return ExportResult(final, path, tuple(reports), metadata, quantized, accuracy)


def open_runtime(
    file: Path, backend: str, device: str | torch.device, resolution: int, scratch: Path
) -> ONNXRuntimeModel:
    """ONNX Runtime (``backend="onnxruntime"``) or OpenVINO (``"openvino"``; an ``.onnx`` file
    is converted into ``scratch`` first) on a raw-output export, for ``predict(backend=...)``.

    Raises:
        ValueError: the file was exported for another input size than ``resolution``.
    """
    if backend == "openvino":
        if file.suffix == ".onnx":
            file = export_openvino(file, scratch / f"{file.stem}.xml")
        runtime: ONNXRuntimeModel = OpenVINOModel(file, device=device)
    else:
        runtime = ONNXRuntimeModel(file, device=device)
    expected = (resolution, resolution)
    if runtime.metadata.input_shape != expected:
        raise ValueError(
            f"{file}: exported for input {runtime.metadata.input_shape}, but the model predicts "
            f"at {expected}; export it again or pass the matching file"
        )
    return runtime


QUANTIZE_CHOICES = ("int8",)
FORMATS = ("onnx", "openvino")


def check_target(
    quantize: str | None,
    calibration: str | os.PathLike[str] | None,
    fmt: str,
    class_names: list[str],
) -> list[Path]:
    """Validate the options before anything is exported; the calibration images (or none).

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
        require_openvino()
    if calibration is None:
        return []
    from rfdetr.data import build_dataset

    files = calibration_images(calibration, class_names)
    build_dataset(calibration, "valid", 32, train=False)  # the split the report needs exists
    return files


def build_target(
    fp32: Path,
    quantize: str | None,
    fmt: str,
    calibration: str | os.PathLike[str] | None,
    files: list[Path],
) -> tuple[Path, QuantizeResult | None, AccuracyReport | None]:
    """Write the derived file(s) next to ``fp32`` (options: `check_target`'s); returns
    (file to use, int8 result, report).

    Raises:
        ExportVerificationError: an fp32 OpenVINO IR differs from ONNX Runtime beyond
            ``FP32_ATOL``.
    """
    path, quantized, runtime = fp32, None, None
    if quantize:
        inputs = preprocessed(files, fp32)
        quantized = quantize_onnx(fp32, fp32.with_name(f"{fp32.stem}.int8.onnx"), inputs)
        path = quantized.path
        runtime = ONNXRuntimeModel(path)
    reference = ONNXRuntimeModel(fp32)
    if fmt == "openvino":
        path = export_openvino(path)
        runtime = OpenVINOModel(path)
        if not quantize:
            _check_fp32(reference, runtime)
    if runtime is None or calibration is None:
        return path, quantized, None
    report = compare_on_dataset(reference, runtime, calibration)
    write_report(report, path)
    logger.info(report.summary())
    return path, quantized, report


def _check_fp32(reference: object, runtime: object, seed: int = 0) -> None:
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
