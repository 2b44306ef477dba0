"""INT8 export: ONNX Runtime static QDQ quantization, calibrated on a dataset's training images
(the scheme and its measured cost: README, "Evaluation and export"). Quantized ``MatMul``/``Gemm``
outputs stay fp32 (`FLOAT_OUTPUT_OPS`: quantized outputs made a Nano 384 file 1.4x slower than
weights only). The sensitivity pass quantizes each module group (`node_groups`) alone and keeps
in fp32 the worst ``max_excluded`` whose own error exceeds ``tolerance``, only if that lowers the
whole file's error; every group is measured, so the file written does not depend on the
machine's load (benchmarks/int8_accuracy.py: the trained Nano kept none).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from rfdetr.export.onnx import ExportError, copy_header
from rfdetr.utils.atomic import write_atomic

logger = logging.getLogger(__name__)

QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
FLOAT_OUTPUT_OPS = ["MatMul", "Gemm"]  # int8 inputs, fp32 output (QGemm, MatMulIntegerToFloat)
# `output_error` of a group quantized alone above which it stays fp32 (boxes move 0.5 % of a side)
DAMAGE_TOLERANCE = 0.005
_ATTENTION = re.compile(r"(^|/)[^/]*(attn|attention)[^/]*/")  # a node inside an attention module
_INDEXED = re.compile(r"^[A-Za-z_]+\.\d+$")  # "blocks.3", "layers.0": one repeated block
_CONTAINERS = {"model", "backbone.0", "transformer"}  # node-name scopes that hold everything


class CalibrationError(ExportError):
    """The calibration dataset cannot calibrate this model (empty, or other classes)."""


@dataclass(frozen=True)
class QuantizeResult:
    """What `quantize_onnx` wrote and measured.

    Attributes:
        path: the int8 file.
        calibration_images: images the ranges were computed on.
        excluded: module groups kept in fp32 by the sensitivity pass.
        error_full, error: `output_error` with every group quantized, and of the file written.
        sensitivity: group -> error with only that group quantized (groups measured).
        seconds: wall time of calibration, sensitivity pass and the final file.
    """

    path: Path
    calibration_images: int
    excluded: list[str]
    error_full: float
    error: float
    sensitivity: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        """JSON-able summary (the path as its file name)."""
        return asdict(self) | {"path": self.path.name}


def calibration_images(
    dataset_dir: str | os.PathLike[str],
    class_names: list[str],
    *,
    split: str = "train",
    max_images: int = 32,
) -> list[Path]:
    """Up to ``max_images`` image files of ``split``, evenly spread over the split.

    Raises:
        CalibrationError: the dataset's classes are not the model's (count or names, in id
            order), or the split has no images. DatasetError: not a COCO/YOLO folder.
    """
    from rfdetr.data import build_dataset, dataset_class_map
    from rfdetr.evaluation.coco import EvaluationError, check_classes

    class_map = dataset_class_map(dataset_dir)
    try:
        check_classes(class_names, class_map, source="the model", dataset=str(dataset_dir))
    except EvaluationError as error:
        message = str(error).replace("evaluate on", "calibrate with")
        raise CalibrationError(f"calibration: {message}") from None
    dataset = build_dataset(dataset_dir, split, 32, train=False, class_map=class_map)
    count = len(dataset)
    if count == 0:
        raise CalibrationError(
            f"{dataset_dir}: the {split} split has no images to calibrate the int8 model on"
        )
    picks = np.unique(np.linspace(0, count - 1, min(count, max_images)).round().astype(int))
    return [dataset.source.image_path(int(i)) for i in picks]


def preprocessed(files: list[Path], fp32_path: str | os.PathLike[str]) -> list[np.ndarray]:
    """``[1, 3, H, W]`` float32 inputs of ``fp32_path``, made as its ``predict()`` makes them."""
    from rfdetr.export.runtime import ONNXRuntimeModel
    from rfdetr.inference import to_float_chw

    runtime = ONNXRuntimeModel(fp32_path, threads=1)
    return [runtime.preprocess([to_float_chw(f, i)])[0].numpy() for i, f in enumerate(files)]


def node_groups(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Nodes to quantize in ``path``, grouped by module path up to its first block index
    (``encoder/encoder/layer.3``, ``decoder/layers.0``, ``class_embed`` ...)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    constants = {t.name for t in graph.initializer}
    constants |= {n.output[0] for n in graph.node if n.op_type == "Constant"}
    groups: dict[str, list[str]] = {}
    for node in graph.node:
        if node.op_type not in QUANTIZED_OPS:
            continue
        attention = node.op_type == "MatMul" and _ATTENTION.search(node.name) is not None
        if not (attention or constants.intersection(node.input)):
            continue
        parts = [p for p in node.name.split("/")[:-1] if p and p not in _CONTAINERS]
        indexed = [i for i, part in enumerate(parts[:3]) if _INDEXED.match(part)]
        key = "/".join(parts[: indexed[0] + 1] if indexed else parts[:1]) or "graph"
        groups.setdefault(key, []).append(node.name)
    return groups


def output_error(
    reference: list[dict[str, np.ndarray]], got: list[dict[str, np.ndarray]], top: int = 10
) -> float:
    """Mean over each image's ``top`` reference queries of the box distance (mean ``|d cxcywh|``)
    to the nearest query of ``got`` plus their best-score difference. Nearest box, not same index:
    the two-stage top-k swaps near-tied queries under small perturbations."""
    errors = []
    for ref, out in zip(reference, got, strict=True):
        for boxes, logits, other_boxes, other_logits in zip(
            ref["dets"], ref["labels"], out["dets"], out["labels"], strict=True
        ):
            scores, other = _sigmoid(logits).max(-1), _sigmoid(other_logits).max(-1)
            keep = np.argsort(-scores)[:top]
            distance = np.abs(boxes[keep, None, :] - other_boxes[None]).mean(-1)  # [k, Q]
            nearest = distance.argmin(1)
            errors.append(distance.min(1) + np.abs(scores[keep] - other[nearest]))
    return float(np.concatenate(errors).mean())


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def _outputs(path: Path, inputs: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    from rfdetr.export.runtime import ONNXRuntimeModel

    runtime = ONNXRuntimeModel(path)
    return [runtime.run(x) for x in inputs]


def _quantize(
    source: Path, output: Path, cache: Path, inputs: list | None, **nodes: list[str] | None
) -> Path:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    feeds = iter([{"input": x} for x in inputs or []])
    reader = SimpleNamespace(get_next=lambda: next(feeds, None)) if inputs else None

    root, hush = logging.getLogger(), logging.Filter("rfdetr")  # passes only rfdetr's records
    root.addFilter(hush)  # ORT logs advice to the root logger on every call
    try:
        quantize_static(
            str(source),
            str(output),
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS),
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibration_cache_path=cache,
            extra_options={"OpTypesToExcludeOutputQuantization": FLOAT_OUTPUT_OPS},
            **nodes,
        )
    finally:
        root.removeFilter(hush)
    return output


def quantize_onnx(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    inputs: list[np.ndarray],
    *,
    sensitivity: bool = True,
    max_excluded: int = 3,
    tolerance: float = DAMAGE_TOLERANCE,
    check_images: int = 4,
) -> QuantizeResult:
    """Write an int8 QDQ copy of the fp32 file ``source`` to ``output`` (metadata kept).

    Calibrated on ``inputs`` (``[1, 3, H, W]``, `preprocessed`), errors measured on the first
    ``check_images``; ``sensitivity``, ``max_excluded``, ``tolerance``: the module docstring's
    pass.
    """
    import onnx

    started = time.perf_counter()
    source, output = Path(source), Path(output)
    if not inputs:
        raise CalibrationError("no calibration images")
    checks = inputs[:check_images]
    with tempfile.TemporaryDirectory(prefix="rfdetr-int8-") as tmp:
        cache, full = Path(tmp, "ranges.json"), Path(tmp, "full.onnx")
        groups = node_groups(source)
        every = [node for nodes in groups.values() for node in nodes]
        _quantize(source, full, cache, inputs, nodes_to_quantize=every)
        reference = _outputs(source, checks)
        error_full = output_error(reference, _outputs(full, checks))
        scores: dict[str, float] = {}
        for name, nodes in groups.items() if sensitivity else ():
            part = _quantize(source, Path(tmp, "part.onnx"), cache, None, nodes_to_quantize=nodes)
            scores[name] = output_error(reference, _outputs(part, checks))
        ranked = sorted(scores, key=scores.__getitem__, reverse=True)
        excluded = [g for g in ranked if scores[g] > tolerance][:max_excluded]
        error, chosen = error_full, full
        if excluded:
            rest = [n for g in groups if g not in excluded for n in groups[g]]
            kept = _quantize(source, Path(tmp, "kept.onnx"), cache, None, nodes_to_quantize=rest)
            error_kept = output_error(reference, _outputs(kept, checks))
            if error_kept < error_full:
                error, chosen = error_kept, kept
            else:
                excluded = []
        result = QuantizeResult(
            output, len(inputs), excluded, error_full, error, scores, time.perf_counter() - started
        )
        model = onnx.load(str(chosen))
        props = {"quantization": json.dumps(result.to_dict())}
        copy_header(onnx.load(str(source), load_external_data=False), model, props)
        write_atomic(output, model.SerializeToString())
    logger.info(
        "int8: error %.4g (all quantized %.4g), fp32 kept: %s (%.0f s)",
        error,
        error_full,
        excluded or "none",
        result.seconds,
    )
    return result
