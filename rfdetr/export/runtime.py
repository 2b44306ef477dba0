"""Run an exported RF-DETR ONNX file with ONNX Runtime, with nothing but the file: the same
`supervision.Detections` as ``RFDETRModel.predict()`` (`OpenVINOModel` for an IR).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv
import torch

from rfdetr.export.metadata import ExportMetadata, MetadataError
from rfdetr.export.verify import RAW_NAMES, make_session
from rfdetr.inference import DEFAULT_THRESHOLD, ImageInput, Thresholds, predict_images, preprocess
from rfdetr.models.postprocess import PostProcess

logger = logging.getLogger(__name__)


def active_providers(session: Any, device: str | torch.device, source: str) -> list[str]:
    """The providers ``session`` really runs with (``get_available_providers()`` lists CUDA even
    when it cannot start); warns when a CUDA ``device`` got none."""
    import onnxruntime as ort

    active = list(session.get_providers())
    wanted = torch.device(device).type == "cuda"
    listed = "CUDAExecutionProvider" in ort.get_available_providers()
    if wanted and listed and "CUDAExecutionProvider" not in active:
        logger.warning(
            "%s: ONNX Runtime could not start its CUDA provider and runs on the CPU "
            "(onnxruntime-gpu %s; it needs the CUDA major it was built for, its cuDNN and "
            "a driver for that CUDA: see the README's GPU notes)",
            source,
            ort.__version__,
        )
    return active


class ONNXRuntimeModel:
    """An exported RF-DETR model under ONNX Runtime.

    Args:
        path: a raw-output ``.onnx`` file written by ``export()`` (not ``--with-postprocess``).
        threads: intra-op threads; None lets ONNX Runtime use every core.
        device: ``"cpu"``, or a CUDA device for the CUDA execution provider (onnxruntime-gpu;
            see :func:`rfdetr.export.verify.execution_providers`).

    Raises:
        FileNotFoundError: no such file. ExportError: it is no ONNX model (one line naming it).
        MetadataError (a ValueError): not an rfdetr export, or a post-processing graph.

    Attributes:
        providers: the execution providers the session runs with (see `active_providers`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        threads: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such ONNX file")
        self.session = make_session(self.path, threads, device)
        self.providers = active_providers(self.session, device, str(self.path))
        self.props = dict(self.session.get_modelmeta().custom_metadata_map)
        batch = self.session.get_inputs()[0].shape[0]
        self.fixed_batch = batch if isinstance(batch, int) else None
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._read_props()

    def _read_props(self) -> None:
        self.metadata = ExportMetadata.from_props(self.props, source=str(self.path))
        if self.metadata.with_postprocess:
            raise MetadataError(
                f"{self.path}: a --with-postprocess graph; {type(self).__name__} needs the "
                "raw-output export (its boxes/scores/class_ids outputs are already final)"
            )
        self.postprocess = PostProcess(self.metadata.num_select, self.metadata.logit_columns)

    def _infer(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.output_names, {"input": batch})

    @property
    def class_names(self) -> list[str]:
        """Name of each 0-based class id."""
        return self.metadata.class_names

    def run(self, images: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
        """Raw outputs by ONNX name for a normalised ``[B, 3, H, W]`` batch of any size."""
        array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else images
        array = np.ascontiguousarray(array, dtype=np.float32)
        step = self.fixed_batch or len(array)
        chunks: list[list[np.ndarray]] = []
        for start in range(0, len(array), max(step, 1)):
            part = array[start : start + step]  # a fixed batch's short last chunk: zero-padded
            padded = np.pad(part, [(0, step - len(part)), (0, 0), (0, 0), (0, 0)])
            chunks.append([output[: len(part)] for output in self._infer(padded)])
        return {
            name: np.concatenate([c[i] for c in chunks]) for i, name in enumerate(self.output_names)
        }

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Like the eager model in eval mode: ``pred_boxes``, ``pred_logits`` (, ``pred_masks``)."""
        outputs = self.run(images)
        return {
            RAW_NAMES[name]: torch.from_numpy(value).to(images.device)
            for name, value in outputs.items()
        }

    def preprocess(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``[3, H_i, W_i]`` images in [0, 1] -> ``([B, 3, h, w]`` normalised, ``[B, 2]`` sizes)."""
        meta = self.metadata
        return preprocess(images, meta.input_shape, "cpu", meta.mean, meta.std)

    def predict(
        self,
        images: ImageInput | list[ImageInput],
        threshold: Thresholds = DEFAULT_THRESHOLD,
        batch_size: int = 8,
    ) -> sv.Detections | list[sv.Detections]:
        """Detect objects; the same inputs and results as ``RFDETRModel.predict()``."""
        return predict_images(
            images,
            threshold,
            batch_size,
            self.class_names,
            self.preprocess,
            lambda: self,
            self.postprocess,
        )
