"""OpenVINO IR export and runtime (the ``openvino`` extra: ``pip install 'rfdetr[openvino]'``).

The IR is converted from an exported ONNX file (weights fp32, ONNX metadata in ``rt_info`` under
``rfdetr``); the int8 QDQ file gives an int8 IR, so one calibration serves both runtimes.
`OpenVINOModel` asks for fp32 arithmetic: on bf16 CPUs OpenVINO would otherwise compute in bf16
(about 1e-2 off), a speed choice left to ``precision="bf16"``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rfdetr.export.onnx import ExportError
from rfdetr.export.runtime import ONNXRuntimeModel
from rfdetr.export.sigstack import keep_signal_stack

FP32_ATOL = 1e-3  # OpenVINO fp32 vs ONNX Runtime fp32, boxes (normalised) and logits


def require_openvino() -> Any:
    """The ``openvino`` module; an `ExportError` saying how to install it when it is missing."""
    try:
        import openvino
    except ImportError:
        raise ExportError(
            "format='openvino' needs OpenVINO; install it with: pip install 'rfdetr[openvino]'"
        ) from None
    return openvino


def export_openvino(
    source: str | os.PathLike[str], output: str | os.PathLike[str] | None = None
) -> Path:
    """Convert the ONNX file ``source`` to ``output`` (default: ``source`` with ``.xml``);
    returns the ``.xml`` path (``.bin`` beside it).

    Raises:
        ExportError: OpenVINO is not installed.
    """
    import onnx

    ov = require_openvino()
    source = Path(source)
    xml = Path(output) if output is not None else source.with_suffix(".xml")
    model = ov.convert_model(str(source))
    proto = onnx.load(str(source), load_external_data=False)
    for prop in proto.metadata_props:
        model.set_rt_info(prop.value, ["rfdetr", prop.key])
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(xml), compress_to_fp16=False)
    return xml


def add_rt_info(xml: Path, props: dict[str, str]) -> None:
    """Add ``props`` to the ``rfdetr`` ``rt_info`` of the IR ``xml`` (rewritten atomically)."""
    ov = require_openvino()
    model = ov.Core().read_model(str(xml))
    for key, value in props.items():
        model.set_rt_info(value, ["rfdetr", key])
    staged = xml.with_name(f".{xml.stem}.partial.xml")
    ov.save_model(model, str(staged), compress_to_fp16=False)
    os.replace(staged.with_suffix(".bin"), xml.with_suffix(".bin"))
    os.replace(staged, xml)


class OpenVINOModel(ONNXRuntimeModel):
    """An OpenVINO IR (``.xml``) of an rfdetr export, on the CPU; see `ONNXRuntimeModel`.

    Args:
        path: the ``.xml`` file written by `export_openvino`.
        threads: inference threads; None lets OpenVINO use every core.
        precision: ``"f32"`` (default) or ``"bf16"`` (faster on CPUs with bf16 units).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        threads: int | None = None,
        device: str | torch.device = "cpu",
        precision: str = "f32",
    ) -> None:
        ov = require_openvino()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such OpenVINO IR file")
        if torch.device(device).type != "cpu":
            raise ValueError(f"OpenVINOModel runs on the CPU, got device {device}")
        core = ov.Core()
        model = core.read_model(str(self.path))
        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        # creating the CPU plugin would leave a dangling signal stack (rfdetr.export.sigstack)
        with keep_signal_stack():
            try:
                self.compiled = core.compile_model(model, "CPU", config)
            except RuntimeError as failure:  # e.g. a low-precision pass refusing an int8 graph
                cause = next((ln for ln in str(failure).splitlines() if "[" in ln), str(failure))
                raise ExportError(
                    f"{self.path}: OpenVINO's CPU plugin cannot compile this model: "
                    f"{cause.strip()[:300]}"
                ) from None
        self.request = self.compiled.create_infer_request()
        section = (
            model.get_rt_info(["rfdetr"]).astype(dict) if model.has_rt_info(["rfdetr"]) else {}
        )
        self.props = {str(key): value.astype(str) for key, value in section.items()}
        batch = model.inputs[0].get_partial_shape()[0]
        self.fixed_batch = batch.get_length() if batch.is_static else None
        self.output_names = [o.get_any_name() for o in model.outputs]
        self._read_props()

    def _infer(self, batch: np.ndarray) -> list[np.ndarray]:
        results = self.request.infer({"input": batch})
        return [np.asarray(results[out]) for out in self.compiled.outputs]
