"""`export_model`: what ``RFDETRModel.export()`` and ``rfdetr export`` run.

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
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rfdetr import __version__
from rfdetr.export.accuracy import AccuracyReport
from rfdetr.export.metadata import ExportMetadata
from rfdetr.export.onnx import ExportError, check_opset, check_shape, export_onnx, simplify_onnx
from rfdetr.export.quantize import QuantizeResult
from rfdetr.export.targets import build_target, check_target
from rfdetr.export.verify import VerifyReport, verify_onnx
from rfdetr.inference import IMAGENET_MEAN, IMAGENET_STD
from rfdetr.presets import list_presets
from rfdetr.weights import LoadedCheckpoint, read_checkpoint

if TYPE_CHECKING:
    from rfdetr.api import RFDETRModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportResult:
    """Files written by `export_model` and their verification.

    Attributes:
        path: the file to use (the simplified one when ``simplify=True``).
        onnx_path: the exported file before simplification.
        simplified_path: the onnxslim output, or None.
        reports: verification of each file written (empty when ``verify=False``).
        metadata: what the files' ``metadata_props`` hold.
        quantized: the int8 quantization (``quantize="int8"``), or None.
        accuracy: the derived file against the fp32 one on the validation images, or None.
    """

    path: Path
    onnx_path: Path
    simplified_path: Path | None
    reports: tuple[VerifyReport, ...]
    metadata: ExportMetadata
    quantized: QuantizeResult | None = None
    accuracy: AccuracyReport | None = None


def export_model(
    source: RFDETRModel,
    output_dir: str | os.PathLike[str] = "output",
    *,
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
    """Export ``source`` (a public model object) to ONNX in ``output_dir``.

    See `rfdetr.api.RFDETRModel.export` for the arguments.

    Raises:
        ExportError: bad arguments (one line). ExportVerificationError: ONNX Runtime and
            PyTorch disagree beyond 1e-4.
    """
    config = source.config
    size = check_shape(shape, config.resolution, config.block_size)
    check_opset(opset_version)
    target = check_target(quantize, calibration, format, list(source.class_names))
    if target.derived and with_postprocess:
        raise ExportError("quantize / format='openvino' need the raw-output graph (no postprocess)")
    model = copy.deepcopy(source.model).cpu().eval()
    columns = source.postprocess.class_columns
    metadata = ExportMetadata(
        model_name=config.name,
        task="segmentation" if config.segmentation_head else "detection",
        class_names=list(source.class_names),
        input_shape=size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        num_queries=config.num_queries,
        num_select=config.num_select,
        patch_size=config.patch_size,
        dynamic_batch=dynamic_batch,
        with_postprocess=with_postprocess,
        rfdetr_version=__version__,
        dataset_ids=_dataset_ids(source),
        logit_columns=list(columns) if columns is not None else None,
    )
    stem = f"rfdetr-{config.name}" + ("-postprocess" if with_postprocess else "")
    path = export_onnx(
        model,
        Path(output_dir) / f"{stem}.onnx",
        shape=size,
        metadata=metadata,
        opset_version=opset_version,
        dynamic_batch=dynamic_batch,
        batch_size=batch_size,
        class_columns=columns,
    )
    reports = []
    reference = source.postprocess if with_postprocess else None
    if verify:
        reports.append(_checked(path, model, reference))
    simplified = None
    if simplify:
        simplified = simplify_onnx(path, path.with_name(f"{stem}.sim.onnx"))
        if verify:
            reports.append(_checked(simplified, model, reference))
    final, quantized, accuracy = simplified or path, None, None
    if target.derived:
        final, quantized, accuracy = build_target(final, target)
    return ExportResult(
        final, path, simplified, tuple(reports), metadata, quantized=quantized, accuracy=accuracy
    )


def _dataset_ids(source: RFDETRModel) -> list[int] | None:
    """The model's dataset ids, when they still describe its classes (one per class name)."""
    ids = getattr(source, "dataset_ids", None)
    if ids is None or len(ids) != len(source.class_names):
        return None
    return list(ids)


def _checked(path: Path, model: object, postprocess: object) -> VerifyReport:
    report = verify_onnx(path, model, postprocess=postprocess)
    logger.info(report.summary())
    return report


def model_from_checkpoint(
    weights: str | os.PathLike[str], size: str | None = None, device: str = "cpu"
) -> RFDETRModel:
    """A public model object from a checkpoint file alone (ours or upstream's).

    The size (the preset that fills what the file does not record) comes from the file: our
    config's ``name``, or upstream's ``model_name``; ``size`` overrides it.

    Raises:
        CheckpointError: the file is missing or unreadable. ExportError: the size is unknown.
    """
    from rfdetr.api import RFDETRModel

    checkpoint = read_checkpoint(weights)
    size = size or size_of(checkpoint)
    if size is None and checkpoint.format == "rfdetr" and checkpoint.config:
        size = "nano"  # our files hold the whole architecture; the preset only names a base
    if size is None:
        raise ExportError(
            f"{checkpoint.path}: the file does not record the model size; pass it "
            f"(--size / size=), one of {list_presets()}"
        )
    if size not in list_presets():
        raise ExportError(f"unknown model size {size!r}; choose one of {list_presets()}")
    model_class = type(f"RFDETR[{size}]", (RFDETRModel,), {"size": size})
    return model_class(pretrain_weights=str(checkpoint.path), device=device)


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower()).removeprefix("rfdetr")


def size_of(checkpoint: LoadedCheckpoint) -> str | None:
    """The preset a checkpoint was trained from, when it says so."""
    config = checkpoint.config or {}
    section = config.get("model") if isinstance(config.get("model"), dict) else config
    names = [section.get("name"), checkpoint.extras.get("model_name")]
    presets = {_key(p): p for p in list_presets()}
    for name in names:
        if isinstance(name, str) and _key(name) in presets:
            return presets[_key(name)]
    return None
