"""The user-facing model class: build or load an RF-DETR model, then `predict()`, `train()`,
`export()`."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import supervision as sv
import torch
from pydantic import ValidationError

from rfdetr.checkpoints import LoadedCheckpoint, load_model, read_checkpoint
from rfdetr.config import get_preset
from rfdetr.config.model import ConfigError
from rfdetr.config.run import describe_error
from rfdetr.hub import resolve_pretrained
from rfdetr.inference import DEFAULT_THRESHOLD, ImageInput, Thresholds, predict_images, preprocess
from rfdetr.models.build import build_model
from rfdetr.models.detector import RFDETR
from rfdetr.models.postprocess import PostProcess
from rfdetr.training.runtime import assigned_gpus, configure_tf32, resolve_device

if TYPE_CHECKING:
    from rfdetr.export.exporter import ExportResult
    from rfdetr.training.loop import TrainResult

logger = logging.getLogger(__name__)


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
    if torch.cuda.is_available() or assigned_gpus() is not None:
        return resolve_device(None)
    return torch.device("mps" if torch.backends.mps.is_available() else "cpu")


class RFDETRModel:
    """An RF-DETR model of one size, ready for `predict()`.

    Args:
        pretrain_weights: a checkpoint path (ours or upstream's), a published name (e.g.
            ``"rf-detr-nano.pth"``), ``None`` for random initialisation, or omitted for the
            official COCO weights of this size (cached, else downloaded and verified).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``; default: the best available.
            Not a device, or CUDA asked for where it is unusable: `ConfigError` (a ValueError).
        num_classes: foreground classes. When it differs from the checkpoint's, the class head
            is re-initialised (logged) and the checkpoint's class names are dropped.
        class_names: a name per 0-based class id; sets ``num_classes`` when that is not given.
        size: the preset (``"seg-small"``...); default: the class's. A file path gives the
            model of the file's size: `from_checkpoint`.
        **overrides: any `ModelConfig` field, e.g. ``resolution=640``.
    """

    size: str = "nano"

    def __init__(
        self,
        pretrain_weights: str | os.PathLike[str] | LoadedCheckpoint | None = DEFAULT_WEIGHTS,
        *,
        device: str | torch.device | None = None,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        size: str | None = None,
        **overrides: Any,
    ) -> None:
        self.size = size or self.size
        if class_names is not None and num_classes is None:
            num_classes = len(class_names)
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"class_names has {len(class_names)} names but num_classes is {num_classes}"
            )
        if num_classes is not None:
            overrides = {**overrides, "num_classes": num_classes}
        checkpoint = self._read_weights(pretrain_weights)
        base = get_preset(self.size)
        self.device = resolve_device(device) if device is not None else default_device()
        configure_tf32(self.device)  # fp32 inference on TF32 tensor cores (RFDETR_TF32=0: off)
        if checkpoint is not None and num_classes not in (None, checkpoint.num_classes):
            logger.info(
                "re-initialising the class head for %d classes (checkpoint has %d)",
                num_classes,
                checkpoint.num_classes,
            )
        try:  # a bad option is one line (ConfigError), as model.train(...) reports it
            if checkpoint is None:
                self.config = base.with_overrides(**overrides)
                self.model: RFDETR = build_model(self.config)
            else:
                self.model, self.config, checkpoint = load_model(checkpoint, base, **overrides)
        except ValidationError as err:
            raise ConfigError(f"{type(self).__name__}(...): {describe_error(err)}") from None
        # The dataset's own id of each class id (COCO category ids...), for export metadata.
        self.dataset_ids = checkpoint.dataset_ids if checkpoint is not None else None
        names = class_names or (checkpoint.class_names if checkpoint is not None else None)
        self.class_names = list(names or [f"class_{i}" for i in range(self.config.num_classes)])
        columns = checkpoint.label_to_logit if checkpoint is not None else None
        self.postprocess = PostProcess(self.config.num_select, class_columns=columns)
        self.model.to(self.device).eval()

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        *,
        size: str | None = None,
        device: str | torch.device | None = None,
    ) -> RFDETRModel:
        """The model a checkpoint file holds (ours or upstream's), ready to predict and export.

        Args:
            size: the preset that fills what the file does not record; default: the one the
                file names (our config's ``name``, upstream's ``model_name``).

        Raises:
            CheckpointError: the file is missing or unreadable, or records no size and none
                is given. ValueError: ``size`` is not a preset.
        """
        checkpoint = read_checkpoint(path)
        return cls(checkpoint, size=size or checkpoint.require_size(), device=device)

    def _read_weights(self, weights: Any) -> LoadedCheckpoint | None:
        if weights is None:
            logger.warning(
                "pretrain_weights=None: %s starts from random weights (expect a long training)",
                type(self).__name__,
            )
            return None
        if isinstance(weights, LoadedCheckpoint):
            return weights
        if weights is DEFAULT_WEIGHTS:
            weights = self.size
        return read_checkpoint(resolve_pretrained(weights))

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
        return predict_images(
            images,
            threshold,
            batch_size,
            self.class_names,
            lambda tensors: preprocess(tensors, self.resolution, self.device),
            lambda: self._forward_for(backend, onnx_path),
            self.postprocess,
        )

    def _forward_for(self, backend: str, onnx_path: str | os.PathLike[str] | None) -> Any:
        """The eager model, or a runtime on its export, cached until the weights or file change."""
        if backend == "torch":
            return self.model
        if backend not in ("onnxruntime", "openvino"):
            raise ValueError(
                f"backend must be 'torch', 'onnxruntime' or 'openvino', got {backend!r}"
            )
        from rfdetr.export.exporter import open_runtime

        if onnx_path is not None:
            file = Path(onnx_path)
            stamp = file.stat().st_mtime_ns if file.is_file() else None
            key: tuple[Any, ...] = ("file", str(file.resolve()), stamp)
        else:
            versions = sum(p._version for p in self.model.parameters())
            key = ("export", id(self.model), versions, self.resolution)
        key += (str(self.device), backend)
        cached = getattr(self, "_onnx_runtime", None)
        if cached is None or cached[0] != key:
            folder = tempfile.TemporaryDirectory(prefix="rfdetr-onnx-")  # lives with the cache
            file = Path(onnx_path) if onnx_path is not None else self.export(folder.name)
            runtime = open_runtime(file, backend, self.device, self.resolution, Path(folder.name))
            self._onnx_runtime = cached = (key, runtime, folder)
        return cached[1]

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
        """Export to ONNX (``output_dir/rfdetr-<size>.onnx``), verified against PyTorch; returns
        the path of the file to use (the simplified, quantized or OpenVINO one when asked for).

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
        """
        options = {k: v for k, v in locals().items() if k not in ("self", "output_dir")}
        return self.export_files(output_dir, **options).path

    def export_files(
        self, output_dir: str | os.PathLike[str] = "output", **options: Any
    ) -> ExportResult:
        """`export`, returning every file written and its verification (an `ExportResult`)."""
        from rfdetr.export.exporter import export_model

        return export_model(
            self.model,
            self.config,
            self.class_names,
            output_dir,
            dataset_ids=self.dataset_ids,
            class_columns=self.postprocess.class_columns,
            **options,
        )

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
            model, config, checkpoint = load_model(result.best_checkpoint, self.config)
            self.model, self.config = model.to(self.device).eval(), config
            self.class_names = list(checkpoint.class_names or result.class_names)
            # The dataset's own class ids replace the pretrained ones (e.g. COCO's).
            self.dataset_ids = checkpoint.dataset_ids
            self.postprocess = PostProcess(config.num_select)
        return result
