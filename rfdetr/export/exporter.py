"""`export_model`: what ``RFDETRModel.export()`` and ``rfdetr export`` run, on plain objects.

Shape and opset checks, a CPU copy of the model, the ONNX file with its metadata, verification
against PyTorch with ONNX Runtime, and optionally an onnxslim-simplified copy, verified the same
way. Files are named after the model: ``rfdetr-<size>.onnx`` (``-postprocess`` for the
post-processing graph, ``.sim.onnx`` for the simplified copy). ``quantize``/``format`` derive
an int8 file and/or an OpenVINO IR from it (`rfdetr.export.targets`).
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from rfdetr import __version__
from rfdetr.config import ModelConfig
from rfdetr.data.normalize import IMAGENET_MEAN, IMAGENET_STD
from rfdetr.export.accuracy import AccuracyReport
from rfdetr.export.metadata import ExportMetadata
from rfdetr.export.onnx import ExportError, check_shape, export_onnx, simplify_onnx
from rfdetr.export.openvino import OpenVINOModel, export_openvino
from rfdetr.export.quantize import QuantizeResult
from rfdetr.export.runtime import ONNXRuntimeModel
from rfdetr.export.targets import build_target, check_target
from rfdetr.export.verify import VerifyReport, verify_onnx
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
    target = check_target(quantize, calibration, format, list(class_names))
    if target.derived and with_postprocess:
        raise ExportError("quantize / format='openvino' need the raw-output graph (no postprocess)")
    model = copy.deepcopy(model).cpu().eval()
    if dataset_ids is not None and len(dataset_ids) != len(class_names):
        dataset_ids = None  # the ids of another head (e.g. COCO's before a new class count)
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
        dataset_ids=list(dataset_ids) if dataset_ids is not None else None,
        logit_columns=list(class_columns) if class_columns is not None else None,
    )
    stem = f"rfdetr-{config.name}" + ("-postprocess" if with_postprocess else "")
    path = Path(output_dir) / f"{stem}.onnx"
    export_onnx(model, path, metadata=metadata, opset_version=opset_version, batch_size=batch_size)
    reference = PostProcess(config.num_select, class_columns) if with_postprocess else None
    reports = [_checked(path, model, reference)] if verify else []
    simplified = simplify_onnx(path, path.with_name(f"{stem}.sim.onnx")) if simplify else None
    if simplified is not None and verify:
        reports.append(_checked(simplified, model, reference))
    final, quantized, accuracy = simplified or path, None, None
    if target.derived:
        final, quantized, accuracy = build_target(final, target)
    return ExportResult(final, path, tuple(reports), metadata, quantized, accuracy)


def _checked(path: Path, model: object, postprocess: object) -> VerifyReport:
    report = verify_onnx(path, model, postprocess=postprocess)
    logger.info(report.summary())
    return report


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
