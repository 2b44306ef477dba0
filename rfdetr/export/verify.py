"""Check an exported ONNX file against the eager PyTorch model with ONNX Runtime.

Both run on the same random inputs (batch 1 and 2 if the batch is dynamic). Tolerance ``atol``
(1e-4) is absolute, except for outputs not on a unit scale (`_RELATIVE`: mask logits reach tens,
where the eager fp32 Seg-Nano is 1.1e-4 from fp64 itself; pixel boxes): relative to their largest
magnitude. Two-stage near-ties: `rfdetr.export.selection`. A post-processing graph is compared
with `PostProcess`: scores as sorted lists, class ids and boxes only at ranks not tied with a
neighbour (the two runtimes may order exact ties differently).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rfdetr.errors import EXIT_FAILED
from rfdetr.export.onnx import ExportError
from rfdetr.export.selection import SelectionCheck, forced_selection, selection_output
from rfdetr.models.detector import RFDETR
from rfdetr.models.postprocess import PostProcess

logger = logging.getLogger(__name__)

_RELATIVE = ("masks", "boxes")  # outputs not on a unit scale (see the module docstring)
RAW_NAMES = {"dets": "pred_boxes", "labels": "pred_logits", "masks": "pred_masks"}


class ExportVerificationError(ExportError):
    """ONNX Runtime and PyTorch disagree beyond the tolerance (exit code 1: not bad input)."""

    exit_code = EXIT_FAILED


@dataclass(frozen=True)
class VerifyReport:
    """Result of `verify_onnx`.

    Attributes:
        path: the file checked.
        batch_sizes: batch sizes run.
        max_abs_diff: output name -> largest ``|onnx - torch|`` over all batches.
        tolerance: output name -> allowed difference.
        mismatched: output name -> elements (class ids) differing at untied ranks, and
            ``selection``: two-stage ranks where ONNX Runtime's choice contradicts PyTorch.
        reordered_ties: near-tie two-stage ranks ONNX Runtime ordered differently.
        selection_forced: PyTorch ran with ONNX Runtime's selection.
    """

    path: Path
    batch_sizes: tuple[int, ...]
    max_abs_diff: dict[str, float]
    tolerance: dict[str, float]
    mismatched: dict[str, int] = field(default_factory=dict)
    reordered_ties: int = 0
    selection_forced: bool = False

    @property
    def passed(self) -> bool:
        """True when every difference is within tolerance and nothing mismatched."""
        within = all(self.max_abs_diff[k] <= self.tolerance[k] for k in self.max_abs_diff)
        return within and not any(self.mismatched.values())

    def summary(self) -> str:
        """One line: the worst difference per output and the verdict."""
        parts = [f"{k} {v:.1e} (tol {self.tolerance[k]:.0e})" for k, v in self.max_abs_diff.items()]
        parts += [f"{k} mismatched {n}" for k, n in self.mismatched.items() if n]
        if self.reordered_ties:
            parts.append(f"{self.reordered_ties} near-tie query ranks reordered")
        verdict = "OK" if self.passed else "FAILED"
        batches = ",".join(map(str, self.batch_sizes))
        where = f"{self.path.name}: onnxruntime vs torch, batch {batches}"
        return f"{where}: {'; '.join(parts)}: {verdict}"


def execution_providers(device: str | torch.device = "cpu") -> list[Any]:
    """ONNX Runtime providers for ``device``: CUDA (then CPU) for a CUDA device, else the CPU
    (also, with a warning, when onnxruntime has no CUDA provider). ``preload_dlls()`` loads the
    CUDA/cuDNN libraries of the ``nvidia-*`` pip packages, which the loader does not search."""
    import onnxruntime as ort

    device = torch.device(device)
    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        logger.warning(
            "onnxruntime %s has no CUDA provider (install onnxruntime-gpu, the `gpu` extra); "
            "running the ONNX model on the CPU",
            ort.__version__,
        )
        return ["CPUExecutionProvider"]
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    cuda = ("CUDAExecutionProvider", {"device_id": device.index or 0})
    return [cuda, "CPUExecutionProvider"]


def make_session(
    path: str | os.PathLike[str] | bytes,
    threads: int | None = None,
    device: str | torch.device = "cpu",
) -> object:
    """An ONNX Runtime session of the file ``path`` (or a serialised model) on ``device``: full
    graph optimisation, ``threads`` intra-op threads (None: every core).

    Raises:
        ExportError: ``path`` is no ONNX model (text, a truncated copy...): one line naming it.
    """
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or 0
    options.log_severity_level = 3
    model = path if isinstance(path, bytes) else str(path)
    try:
        return ort.InferenceSession(model, options, providers=execution_providers(device))
    except (state.InvalidProtobuf, state.InvalidGraph, state.Fail) as error:
        reason = str(error).strip().splitlines()[0]
        raise ExportError(f"{path}: ONNX Runtime cannot load it ({reason})") from None


def verify_onnx(
    path: str | os.PathLike[str],
    model: RFDETR,
    *,
    postprocess: PostProcess | None = None,
    atol: float = 1e-4,
    seed: int = 0,
    raise_on_failure: bool = True,
) -> VerifyReport:
    """Run ``path`` with ONNX Runtime and ``model`` with PyTorch on the same random inputs.

    Args:
        path: an exported file.
        model: the eager model it came from, eval mode, on the CPU.
        postprocess: the reference post-processing for a ``with_postprocess`` file.
        atol: tolerance; absolute, relative for mask logits and pixel boxes.
        raise_on_failure: raise `ExportVerificationError` instead of returning a failed report.
    """
    session = make_session(path)
    extra = selection_output(path)
    picker = None if extra is None else make_session(extra[0])
    inputs = session.get_inputs()
    batch_dim, _, height, width = inputs[0].shape
    sizes = (batch_dim,) if isinstance(batch_dim, int) else (1, 2)
    generator = torch.Generator().manual_seed(seed)
    names = [o.name for o in session.get_outputs()]
    if len(inputs) > 1 and postprocess is None:
        raise ExportError(f"{path}: a post-processing graph needs postprocess= to verify")
    diffs: dict[str, float] = {}
    scales: dict[str, float] = {}
    mismatched: dict[str, int] = {"selection": 0}
    selection = SelectionCheck()
    for batch in sizes:
        images = torch.randn(batch, 3, height, width, generator=generator)
        feed = {inputs[0].name: images.numpy()}
        if len(inputs) > 1:
            orig = torch.randint(32, 1024, (batch, 2), generator=generator)
            feed[inputs[1].name] = orig.numpy()
        got = dict(zip(names, session.run(None, feed), strict=True))
        selected = contextlib.nullcontext()
        if picker is not None:
            index = torch.from_numpy(picker.run([extra[1]], feed)[0])
            selected = forced_selection(model, index, 10 * atol, selection)
        with selected, torch.inference_mode():
            reference = model(images)
        _require_finite(reference, path)
        if len(inputs) > 1:
            _compare_topk(got, reference, orig, postprocess, atol, diffs, scales, mismatched)
        else:
            for name in names:
                _update(diffs, scales, name, got[name], reference[RAW_NAMES[name]].numpy())
    tolerance = {k: atol * (max(1.0, scales[k]) if k in _RELATIVE else 1.0) for k in diffs}
    mismatched["selection"] = selection.violations
    report = VerifyReport(
        Path(path), sizes, diffs, tolerance, mismatched, selection.reordered, selection.forced
    )
    if raise_on_failure and not report.passed:
        raise ExportVerificationError(report.summary() + "; the file is kept for inspection")
    logger.info(report.summary())
    return report


def _require_finite(reference: dict, path: str | os.PathLike[str]) -> None:
    for name, value in reference.items():
        floating = isinstance(value, torch.Tensor) and value.is_floating_point()
        if floating and not value.isfinite().all():
            raise ExportError(
                f"{path}: the PyTorch model's {name} are not finite (NaN or inf); "
                "its weights are broken; export from a finite checkpoint"
            )


def _update(diffs: dict, scales: dict, name: str, got: np.ndarray, expected: np.ndarray) -> None:
    """Fold one output's worst difference in; NaN/inf counts as infinite (``max(x, nan)`` is x)."""
    delta = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    diff = float(delta.max(initial=0.0)) if np.isfinite(delta).all() else math.inf
    diffs[name] = max(diffs.get(name, 0.0), diff)
    scales[name] = max(scales.get(name, 0.0), float(np.abs(expected).max(initial=0.0)))


def _compare_topk(
    got: dict,
    outputs: dict,
    orig: torch.Tensor,
    postprocess: PostProcess,
    atol: float,
    diffs: dict,
    scales: dict,
    mismatched: dict,
) -> None:
    """Fold a post-processing graph's outputs ``got`` in against ``postprocess.select`` of the
    eager ``outputs``; selected one further to see whether the last rank is tied."""
    wider = PostProcess(postprocess.num_select + 1, postprocess.class_columns)
    found = wider.select(
        outputs["pred_logits"], outputs["pred_boxes"], orig, outputs.get("pred_masks")
    )
    boxes, scores, class_ids, *masks = (value.numpy() for value in found)
    k = min(postprocess.num_select, scores.shape[1])
    _update(diffs, scales, "scores", -np.sort(-got["scores"], axis=1), scores[:, :k])
    padded = np.concatenate([scores[:, :1] + 1, scores], axis=1)
    if scores.shape[1] == k:  # no score left out: the last rank is untied below
        padded = np.concatenate([padded, scores[:, -1:] - 1], axis=1)
    gaps = np.minimum(padded[:, 1:-1] - padded[:, 2:], padded[:, :-2] - padded[:, 1:-1])
    untied = gaps > 10 * atol
    ids_wrong = (got["class_ids"] != class_ids[:, :k]) & untied
    mismatched["class_ids"] = mismatched.get("class_ids", 0) + int(ids_wrong.sum())
    for name, expected in [("boxes", boxes), *(("masks", m) for m in masks)]:
        _update(diffs, scales, name, got[name][untied], expected[:, :k][untied])
