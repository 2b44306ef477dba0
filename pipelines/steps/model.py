"""Pick the model to ship and export it (the ``select_checkpoint`` and ``export_onnx`` steps)."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipelines.steps.common import plain_number, single_file, step_metrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SelectedModel:
    """The stripped best checkpoint and where it came from."""

    path: Path
    source: str  # "regular" or "ema"
    epoch: int | None
    map_50_95: float | None
    map_50: float | None
    model_size: str | None
    class_names: list[str]

    def metadata(self) -> dict[str, Any]:
        known = {k: v for k, v in asdict(self).items() if v is not None and k != "path"}
        return {"file": self.path.name, "framework": "pytorch", **known}


def select_checkpoint(run_dir: str | Path, dest_dir: str | Path) -> SelectedModel:
    """Write :func:`rfdetr.checkpoints.select_best` of the run's best regular and EMA models
    (stripped) as ``dest_dir/checkpoint_best_total.pth``; the run folder, an input artifact, is
    not written to.

    Raises:
        CheckpointError: the run folder holds neither best file.
    """
    from rfdetr import checkpoints as files

    run, dest = Path(run_dir), Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    with step_metrics("select_checkpoint") as metrics:
        target = files.select_best(run, dest / files.BEST_TOTAL)
        checkpoint = files.read_checkpoint(target)
        found = checkpoint.metrics or {}
        selected = SelectedModel(
            path=target,
            source=str(found.get("source", "regular")),
            epoch=int(found["epoch"]) if isinstance(found.get("epoch"), int) else None,
            map_50_95=plain_number(found.get("map_50_95")),
            map_50=plain_number(found.get("map_50")),
            model_size=checkpoint.size,
            class_names=list(checkpoint.class_names or []),
        )
        if selected.map_50_95 is not None:
            metrics.set_map({"map_50_95": selected.map_50_95})
    logger.info(
        "selected the %s model of epoch %s (mAP50:95 %s)",
        selected.source,
        selected.epoch,
        selected.map_50_95,
    )
    return selected


@dataclass(frozen=True)
class ExportedModel:
    """A verified ONNX file and what it holds."""

    path: Path
    opset: int
    input_shape: tuple[int, int]
    class_names: list[str]
    max_abs_diff: dict[str, float]
    int8: dict[str, Any] | None = None  # file, fp32-kept groups, accuracy vs fp32 (valid split)

    def metadata(self) -> dict[str, Any]:
        data = {
            "file": self.path.name,
            "framework": "onnx",
            "opset": self.opset,
            "input_shape": [1, 3, *self.input_shape],
            "class_names": list(self.class_names),
            "verified_max_abs_diff": dict(self.max_abs_diff),
        }
        if self.int8 is not None:
            data["int8"] = self.int8
            data["int8_map_50_95_delta"] = self.int8["accuracy"]["map50_95_delta"]
        return data


def export_checkpoint(
    checkpoint_dir: str | Path,
    dest_dir: str | Path,
    *,
    opset: int = 17,
    quantize: str | None = None,
    dataset_dir: str | Path | None = None,
) -> ExportedModel:
    """Export the checkpoint in ``checkpoint_dir`` to ``dest_dir/rfdetr-<size>.onnx``, verified
    against PyTorch with ONNX Runtime. ``quantize="int8"`` also writes
    ``dest_dir/int8/rfdetr-<size>.int8.onnx`` (calibrated on ``dataset_dir``) and its accuracy.

    Raises:
        ExportVerificationError: ONNX Runtime and PyTorch disagree beyond the tolerance.
        ExportError, CheckpointError: the checkpoint cannot be exported.
    """
    from pipelines.steps.dataset import dataset_folder
    from rfdetr.api import RFDETRModel

    checkpoint = single_file(checkpoint_dir, "*.pth", "checkpoint")
    calibration = dataset_folder(dataset_dir) if quantize and dataset_dir else nullcontext(None)
    with step_metrics("export_onnx") as metrics, calibration as folder:
        result = RFDETRModel.from_checkpoint(checkpoint, device="cpu").export_files(
            dest_dir, opset_version=opset, quantize=quantize or None, calibration=folder
        )
        (report,) = result.reports  # the fp32 file's (no simplified copy is written)
        diffs = {name: float(value) for name, value in report.max_abs_diff.items()}
        metrics.set_gauge("onnx_bytes", result.path.stat().st_size, "Exported ONNX file size")
    int8 = None
    if result.quantized:  # the int8 file and its accuracy report move into dest_dir/int8/
        folder = Path(dest_dir) / "int8"
        folder.mkdir(exist_ok=True)
        for file in (result.path, result.path.with_name(result.path.name + ".accuracy.json")):
            file.replace(folder / file.name)
        int8 = {
            "file": f"int8/{result.path.name}",
            "fp32_kept": list(result.quantized.excluded),
            "accuracy": result.accuracy.to_dict(),
        }
    meta = result.metadata
    shape = tuple(meta.input_shape)
    return ExportedModel(result.onnx_path, opset, shape, list(meta.class_names), diffs, int8)
