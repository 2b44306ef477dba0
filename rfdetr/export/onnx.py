"""Trace an `RFDETR` model to ONNX through `ExportModule`, embed metadata, check, simplify.

The TorchScript exporter (``dynamo=False``) on purpose: it writes standard ops at the requested
opset, while the dynamo one needs ``onnxscript`` and moves to opset 18 (upstream issue #473).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch

from rfdetr.errors import UserError
from rfdetr.export.graph import ExportModule
from rfdetr.export.metadata import OUTPUTS, ExportMetadata
from rfdetr.models.detector import RFDETR

logger = logging.getLogger(__name__)

MIN_OPSET = 17  # LayerNormalization (17) and GridSample (16) are single ops from here on
MAX_OPSET = 20  # the TorchScript exporter's newest opset in torch 2.14


class ExportError(UserError, ValueError):
    """Export arguments or a model that cannot be exported; the message is one line."""


def check_shape(
    shape: tuple[int, int] | list[int] | None, default: int, block: int
) -> tuple[int, int]:
    """Validate an export ``(height, width)`` (None: the model's square resolution).

    Raises:
        ExportError: not two positive ints, or a side not divisible by ``block``
            (``patch_size * num_windows``).
    """
    if shape is None:
        return default, default
    try:
        height, width = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise ExportError(f"shape must be two integers (height, width), got {shape!r}") from None
    if height <= 0 or width <= 0 or height % block or width % block:
        raise ExportError(
            f"shape {height}x{width} must be positive and divisible by patch_size * num_windows "
            f"= {block} (e.g. {max(block, height // block * block)}x"
            f"{max(block, width // block * block)})"
        )
    return height, width


def export_onnx(
    model: RFDETR,
    output: str | os.PathLike[str],
    *,
    metadata: ExportMetadata,
    opset_version: int = 17,
    batch_size: int = 1,
) -> Path:
    """Write the inference graph of ``model`` (eval mode, CPU; not modified) to ``output``.

    ``metadata`` goes into ``metadata_props`` and chooses the graph: ``input_shape``,
    ``dynamic_batch`` (symbolic axis ``batch``, else ``batch_size``), ``with_postprocess``
    (`PostProcess.select` appended, classes in ``logit_columns``).

    Raises:
        ExportError: an opset outside ``[MIN_OPSET, MAX_OPSET]`` or a bad batch size.
    """
    import onnx

    if not isinstance(opset_version, int) or not MIN_OPSET <= opset_version <= MAX_OPSET:
        raise ExportError(
            f"opset_version {opset_version!r} is not supported; use {MIN_OPSET}..{MAX_OPSET} "
            f"(default 17)"
        )
    if batch_size < 1:
        raise ExportError(f"batch_size must be >= 1, got {batch_size}")
    shape, dynamic_batch = metadata.input_shape, metadata.dynamic_batch
    top_k = metadata.num_select if metadata.with_postprocess else None
    module = ExportModule(model, shape, top_k, metadata.logit_columns).eval()
    images = torch.randn(batch_size, 3, *shape)
    args: tuple[torch.Tensor, ...] = (images,)
    if top_k is not None:
        args = (images, torch.tensor([[shape[0], shape[1]]] * batch_size, dtype=torch.long))
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        shapes = [tuple(out.shape[1:]) for out in module(*args)]
        names_in = ["input", "orig_size"][: len(args)]
        names_out = list(OUTPUTS[metadata.with_postprocess])[: len(shapes)]
        axes = {name: {0: "batch"} for name in names_in + names_out} if dynamic_batch else None
        # Tracer notes on shape ints (fixed by design) and the legacy-exporter note are expected.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=names_in,
            output_names=names_out,
            opset_version=opset_version,
            dynamic_axes=axes,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    _describe(proto, metadata, shapes, batch_size)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    logger.info("exported %s (%.1f MB, opset %d)", path, path.stat().st_size / 1e6, opset_version)
    return path


def _describe(
    proto: object, metadata: ExportMetadata, shapes: list[tuple[int, ...]], batch_size: int
) -> None:
    """Write the static output dims the tracer leaves symbolic (for TensorRT, shape inference),
    the metadata, the producer and a doc string."""
    import onnx

    batch = "batch" if metadata.dynamic_batch else batch_size
    for output, shape in zip(proto.graph.output, shapes, strict=True):
        kind = output.type.tensor_type.elem_type
        output.CopyFrom(onnx.helper.make_tensor_value_info(output.name, kind, [batch, *shape]))
    set_props(proto, metadata.to_props())
    proto.producer_name = "rfdetr"
    proto.producer_version = metadata.rfdetr_version
    proto.doc_string = (
        f"RF-DETR {metadata.model_name} ({metadata.task}); input 'input' [B, 3, "
        f"{metadata.input_shape[0]}, {metadata.input_shape[1]}] float32 RGB normalised with "
        "ImageNet mean/std; see metadata_props for classes and outputs."
    )


def simplify_onnx(source: str | os.PathLike[str], output: str | os.PathLike[str]) -> Path:
    """Simplify ``source`` with onnxslim into ``output``, keeping its metadata; returns ``output``.

    Raises:
        ExportError: onnxslim is not installed (the ``onnx`` extra provides it).
    """
    import onnx

    try:
        import onnxslim
    except ImportError:
        raise ExportError(
            "simplify=True needs onnxslim; install it with: pip install 'rfdetr[onnx]'"
        ) from None
    original = onnx.load(str(source))
    slim = onnxslim.slim(original)
    copy_header(original, slim)
    onnx.checker.check_model(slim, full_check=True)
    onnx.save(slim, str(output))
    return Path(output)


def set_props(proto: object, props: dict[str, str]) -> None:
    """Replace an ONNX ``ModelProto``'s ``metadata_props`` with ``props``."""
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def copy_header(source: object, target: object, extra: dict[str, str] | None = None) -> None:
    """Give the ``ModelProto`` ``target`` the ``metadata_props`` of ``source`` (plus ``extra``),
    its producer and its doc string (``source`` may be ``target``)."""
    set_props(target, {p.key: p.value for p in source.metadata_props} | (extra or {}))
    target.producer_name, target.producer_version = source.producer_name, source.producer_version
    target.doc_string = source.doc_string
