"""The user-facing model classes: build or load an RF-DETR model, then `predict()`.

`RFDETRNano()` with no argument loads the official COCO-pretrained weights of that size (from
the cache folder, else downloaded and checksum-verified); ``pretrain_weights=PATH`` loads a
checkpoint of ours or of upstream's; ``pretrain_weights=None`` starts from random weights.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import supervision as sv
import torch

from rfdetr.config import ModelConfig
from rfdetr.export.metadata import dataset_ids_from
from rfdetr.hub import resolve_pretrained
from rfdetr.inference import (
    DEFAULT_THRESHOLD,
    ImageInput,
    Thresholds,
    is_batch,
    preprocess,
    resolve_thresholds,
    to_float_chw,
)
from rfdetr.models.build import build_model
from rfdetr.models.detector import RFDETR
from rfdetr.models.postprocess import PostProcess
from rfdetr.presets import get_preset
from rfdetr.training.runtime import assigned_gpus, configure_tf32, cuda_unusable
from rfdetr.weights import LoadedCheckpoint, load_weights, read_checkpoint

if TYPE_CHECKING:
    from rfdetr.training.loop import TrainResult

logger = logging.getLogger(__name__)

# Architecture fields read from an upstream checkpoint's args when present (same names as ours).
_UPSTREAM_ARCH_FIELDS = (
    "encoder",
    "out_feature_indexes",
    "patch_size",
    "num_windows",
    "positional_encoding_size",
    "resolution",
    "projector_scale",
    "hidden_dim",
    "sa_nheads",
    "ca_nheads",
    "dec_n_points",
    "dec_layers",
    "num_queries",
    "num_select",
    "mask_downsample_ratio",
)


class _Default:
    def __repr__(self) -> str:
        return "<official pretrained weights>"


DEFAULT_WEIGHTS: Any = _Default()


def default_device() -> torch.device:
    """CUDA when available, else Apple's MPS, else the CPU.

    Raises:
        ConfigError: the container was assigned GPUs (``NVIDIA_VISIBLE_DEVICES``) that CUDA
            cannot use: an error rather than a silent CPU run.
    """
    if torch.cuda.is_available():
        return torch.device("cuda")
    if assigned_gpus() is not None:
        raise cuda_unusable(f"NVIDIA_VISIBLE_DEVICES={assigned_gpus()} assigns a GPU")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class RFDETRModel:
    """An RF-DETR model of one size, ready for `predict()`.

    Args:
        pretrain_weights: a checkpoint path, a published name (e.g. ``"rf-detr-nano.pth"``),
            ``None`` for random initialisation, or omitted for the official COCO weights.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``; default: the best available.
        num_classes: foreground classes. When it differs from the checkpoint's, the class head
            is re-initialised (logged) and the checkpoint's class names are dropped.
        class_names: a name per 0-based class id; sets ``num_classes`` when that is not given.
        **overrides: any `ModelConfig` field, e.g. ``resolution=640``.
    """

    size: ClassVar[str] = "nano"

    def __init__(
        self,
        pretrain_weights: str | os.PathLike[str] | None = DEFAULT_WEIGHTS,
        *,
        device: str | torch.device | None = None,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        **overrides: Any,
    ) -> None:
        if class_names is not None and num_classes is None:
            num_classes = len(class_names)
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"class_names has {len(class_names)} names but num_classes is {num_classes}"
            )
        checkpoint = self._read_weights(pretrain_weights)
        config = self._resolve_config(checkpoint, num_classes, overrides)
        self.device = torch.device(device) if device is not None else default_device()
        configure_tf32(self.device)  # fp32 inference on TF32 tensor cores (RFDETR_TF32=0: off)
        self.model: RFDETR = build_model(config)
        label_to_logit = None
        if checkpoint is not None:
            checkpoint = load_weights(
                self.model,
                checkpoint,
                num_classes=config.num_classes,
                num_queries=config.num_queries,
                group_detr=config.group_detr,
            )
            label_to_logit = checkpoint.label_to_logit
            class_names = class_names or checkpoint.class_names
        # The dataset's own id of each class id (COCO category ids...), for export metadata.
        self.dataset_ids: list[int] | None = (
            dataset_ids_from(checkpoint) if checkpoint is not None else None
        )
        self.config = config
        self.class_names = list(class_names or [f"class_{i}" for i in range(config.num_classes)])
        self.postprocess = PostProcess(config.num_select, class_columns=label_to_logit)
        self.model.to(self.device).eval()

    @classmethod
    def _read_weights(cls, weights: Any) -> LoadedCheckpoint | None:
        if weights is None:
            logger.warning(
                "pretrain_weights=None: %s starts from random weights (expect a long training)",
                cls.__name__,
            )
            return None
        if weights is DEFAULT_WEIGHTS:
            weights = cls.size
        return read_checkpoint(resolve_pretrained(weights))

    def _resolve_config(
        self, checkpoint: LoadedCheckpoint | None, num_classes: int | None, overrides: dict
    ) -> ModelConfig:
        config = get_preset(self.size)
        if checkpoint is not None:
            config = config.with_overrides(**architecture_from(checkpoint))
            config = config.with_overrides(num_classes=checkpoint.num_classes)
        if num_classes is not None:
            if checkpoint is not None and num_classes != checkpoint.num_classes:
                logger.info(
                    "re-initialising the class head for %d classes (checkpoint has %d)",
                    num_classes,
                    checkpoint.num_classes,
                )
            overrides = {**overrides, "num_classes": num_classes}
        return config.with_overrides(**overrides)

    @property
    def resolution(self) -> int:
        """Square input side used by `predict()`."""
        return self.config.resolution

    def predict(
        self,
        images: ImageInput | list[ImageInput],
        threshold: Thresholds = DEFAULT_THRESHOLD,
        batch_size: int = 8,
        *,
        backend: str = "torch",
        onnx_path: str | os.PathLike[str] | None = None,
    ) -> sv.Detections | list[sv.Detections]:
        """Detect objects in one image or a list of images.

        Args:
            images: a path, PIL image, ``[H, W, 3]`` RGB uint8 array, ``[3, H, W]`` float
                tensor in [0, 1], or a list of them.
            threshold: minimum confidence kept; or per class, ``{"dog": 0.7, 0: 0.3, "*": 0.5}``
                (class names or ids; ``"*"`` every other class, default 0.5).
            batch_size: images per forward pass.
            backend: ``"torch"`` (eager, ``torch.inference_mode``) or ``"onnxruntime"``: the
                model is exported once (verified, cached until the weights change) and run
                with ONNX Runtime on the CPU; the detections are the same. ``"openvino"``:
                the same, converted to an fp32 OpenVINO IR (the ``openvino`` extra).
            onnx_path: with ``backend="onnxruntime"``, an exported raw-output file to run
                instead of exporting (an int8 file too); with ``"openvino"``, such a file or
                its IR (``.xml``).

        Returns:
            For each image, `supervision.Detections` with ``xyxy`` in original-image pixels,
            ``confidence``, 0-based ``class_id``, ``mask`` (``[N, H, W]`` bool, Seg models) and
            ``data["class_name"]``; a single object for a single image, else a list.
        """
        single = not is_batch(images)
        items = [images] if single else list(images)
        tensors = [to_float_chw(item, index) for index, item in enumerate(items)]
        threshold = resolve_thresholds(threshold, self.class_names)
        forward = self._forward_for(backend, onnx_path)
        detections: list[sv.Detections] = []
        for start in range(0, len(tensors), batch_size):
            batch, sizes = preprocess(
                tensors[start : start + batch_size], self.resolution, self.device
            )
            with torch.inference_mode():
                results = self.postprocess(forward(batch), sizes, threshold=threshold)
            detections.extend(self._to_detections(result) for result in results)
        return detections[0] if single else detections

    def _forward_for(self, backend: str, onnx_path: str | os.PathLike[str] | None) -> Any:
        if backend == "torch":
            return self.model
        if backend in ("onnxruntime", "openvino"):
            from rfdetr.export.runtime import runtime_for

            return runtime_for(self, onnx_path, backend)
        raise ValueError(f"backend must be 'torch', 'onnxruntime' or 'openvino', got {backend!r}")

    def export(
        self,
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
    ) -> Path:
        """Export to ONNX (``output_dir/rfdetr-<size>.onnx``), verified against PyTorch.

        The graph takes ``input`` ``[B, 3, H, W]`` float32 (RGB, ImageNet-normalised) and
        returns ``dets`` ``[B, Q, 4]`` normalised cxcywh, ``labels`` ``[B, Q, C+1]`` logits and,
        for Seg models, ``masks`` ``[B, Q, H/4, W/4]`` logits. Class names, dataset ids,
        input size, normalisation and version are in the file's ``metadata_props``.

        Args:
            output_dir: folder for the files (created).
            opset_version: ONNX opset, 17..20.
            dynamic_batch: symbolic batch axis; False fixes it to ``batch_size``.
            batch_size: the fixed batch when ``dynamic_batch=False``.
            simplify: also write ``rfdetr-<size>.sim.onnx`` with onnxslim (verified too) and
                return its path.
            shape: input ``(height, width)``; default the model's resolution. Each side must be
                divisible by ``patch_size * num_windows``.
            with_postprocess: a graph with a second input ``orig_size`` ``[B, 2]`` (height,
                width) returning ``boxes`` (pixel xyxy), ``scores`` and ``class_ids`` after
                top-k, as ``predict()`` computes them (no threshold).
            verify: run ONNX Runtime and PyTorch on random inputs (batch 1 and 2) and fail
                above 1e-4 (``ExportVerificationError``).
            quantize: ``"int8"`` also writes ``rfdetr-<size>.int8.onnx`` (static QDQ,
                per-channel weights, sensitive layers kept fp32) and returns it.
            calibration: a dataset folder of the model's classes: its train images calibrate
                int8, its valid images measure any derived file against fp32 (mAP50:95 delta,
                box/score deviations) into ``<file>.accuracy.json`` and the file's metadata.
            format: ``"onnx"`` or ``"openvino"`` (an IR ``.xml``/``.bin``, fp32, or int8 with
                ``quantize``; the ``openvino`` extra).

        Returns:
            The path of the file to use (`pathlib.Path`).
        """
        from rfdetr.export.exporter import export_model

        result = export_model(
            self,
            output_dir,
            opset_version=opset_version,
            dynamic_batch=dynamic_batch,
            batch_size=batch_size,
            simplify=simplify,
            shape=shape,
            with_postprocess=with_postprocess,
            verify=verify,
            quantize=quantize,
            calibration=calibration,
            format=format,
        )
        return result.path

    def train(self, **options: Any) -> TrainResult:
        """Fine-tune on a COCO or YOLO dataset folder, as upstream's ``model.train(...)``.

        Args:
            **options: ``dataset_dir`` (required), ``epochs``, ``batch_size``,
                ``grad_accum_steps``, ``lr``, ``output_dir``, ``resume`` and every other
                `RunConfig` option by its name (see ``rfdetr.config``); a misspelt name fails
                at once, naming the closest valid one.

        Returns:
            The run's outputs (``best_checkpoint``, ``best_metrics``, ``history``, ...). The
            instance then holds the best weights (``checkpoint_best_total.pth``) and the
            dataset's class names, so ``predict()`` works right away.
        """
        from rfdetr.training.loop import fit
        from rfdetr.training.setup import instance_run_config

        result = fit(instance_run_config(self.config, options), model=self.model)
        if result.best_checkpoint is not None:
            checkpoint = read_checkpoint(result.best_checkpoint)
            config = self.config.with_overrides(**architecture_from(checkpoint))
            model = build_model(config)
            load_weights(model, checkpoint)
            self.model, self.config = model.to(self.device).eval(), config
            self.class_names = list(checkpoint.class_names or result.class_names)
            # The dataset's own class ids replace the pretrained ones (e.g. COCO's).
            self.dataset_ids = dataset_ids_from(checkpoint)
            self.postprocess = PostProcess(config.num_select)
        return result

    def _to_detections(self, result: dict[str, torch.Tensor]) -> sv.Detections:
        class_id = result["labels"].cpu().numpy().astype(int)
        names = np.array([self.class_names[i] for i in class_id], dtype=object)
        masks = result.get("masks")
        return sv.Detections(
            xyxy=result["boxes"].float().cpu().numpy(),
            confidence=result["scores"].float().cpu().numpy(),
            class_id=class_id,
            mask=masks.cpu().numpy() if masks is not None else None,
            data={"class_name": names},
        )


def architecture_from(checkpoint: LoadedCheckpoint) -> dict[str, Any]:
    """Architecture fields recorded in a checkpoint, as `ModelConfig` overrides."""
    source = checkpoint.config or {}
    if isinstance(source.get("model"), dict):  # our run config: the model section
        source = source["model"]
    if checkpoint.format == "rfdetr":
        return {k: v for k, v in source.items() if k in ModelConfig.model_fields and k != "name"}
    merged = {**(checkpoint.args or {}), **source}
    return {k: merged[k] for k in _UPSTREAM_ARCH_FIELDS if merged.get(k) is not None}
