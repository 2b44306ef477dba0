"""Read any checkpoint (ours or upstream's) into one record, and build the model it describes.

Every file is read with ``torch.load(weights_only=True)`` (:func:`.formats.safe_load`). Formats:
``"rfdetr"`` (ours; ``config`` is the run config, or in older files the model config alone);
``"upstream-legacy"`` (hosted weights and upstream 1.4.x: ``args`` a pickled Namespace);
``"upstream"`` (1.11.x ``.pth``: ``args`` a dict, ``model_name``, ``model_config`` alongside);
``"upstream-lightning"`` (1.11.x ``.ckpt``: weights under ``state_dict``, ``model.`` prefix).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from rfdetr.checkpoints import formats as fmt
from rfdetr.checkpoints.formats import CheckpointError
from rfdetr.config import ModelConfig, RunConfig, get_preset, list_presets
from rfdetr.models.build import build_model
from rfdetr.models.detector import RFDETR
from rfdetr.weights import load_state_dict_strict

# Architecture fields read from an upstream checkpoint's args when present (same names as ours).
_UPSTREAM_ARCH_FIELDS = (
    "encoder", "out_feature_indexes", "patch_size", "num_windows", "positional_encoding_size",
    "resolution", "projector_scale", "hidden_dim", "sa_nheads", "ca_nheads", "dec_n_points",
    "dec_layers", "num_queries", "num_select", "mask_downsample_ratio",
)  # fmt: skip


@dataclass(frozen=True)
class LoadedCheckpoint:
    """What a checkpoint file holds, as plain data.

    Attributes:
        format: ``"rfdetr"``, ``"upstream-legacy"``, ``"upstream"`` or ``"upstream-lightning"``.
        state_dict: Parameter and buffer name -> tensor (on CPU), upstream key names.
        num_classes: Classes of the detection head (``class_embed.bias`` has one row more).
        class_names: Name of each contiguous 0-based class id, or None when the file has none.
        label_to_logit: Column of ``pred_logits`` that scores each class id, or None when class id
            ``i`` is column ``i``. Set for the COCO-pretrained weights (COCO category ids) and for
            upstream 1.4.x COCO-format training (category ids 1..N).
        config: Model configuration: ours ``config``, upstream ``model_config``, else upstream args.
        args: Upstream training arguments as a dict (None for our format).
        epoch: Epoch the weights come from, when recorded.
        metrics: Evaluation metrics, when recorded (our format).
        ema_state_dict: The EMA weights of a training checkpoint (``checkpoint.pth``), else None.
        extras: Other scalar metadata, e.g. upstream ``model_name``, ``rfdetr_version``.
    """

    path: Path
    format: str
    state_dict: dict[str, torch.Tensor]
    num_classes: int
    class_names: list[str] | None = None
    label_to_logit: list[int] | None = None
    config: dict[str, Any] | None = None
    args: dict[str, Any] | None = None
    epoch: int | None = None
    metrics: dict[str, Any] | None = None
    ema_state_dict: dict[str, torch.Tensor] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def model_section(self) -> dict[str, Any]:
        """The architecture part of ``config``: its ``model`` in a run config (empty when the
        file records none)."""
        config = self.config or {}
        return config["model"] if isinstance(config.get("model"), dict) else config

    @property
    def run_config(self) -> RunConfig | None:
        """The run config of a checkpoint our training wrote; None for other files."""
        if self.format != "rfdetr" or not isinstance((self.config or {}).get("model"), dict):
            return None
        try:
            return RunConfig.model_validate(self.config)
        except ValueError:  # pydantic's ValidationError: a partial or hand-made config
            return None

    @property
    def architecture(self) -> dict[str, Any]:
        """Architecture fields the file records, as `ModelConfig` overrides."""
        source = self.model_section
        if self.format == "rfdetr":
            fields = ModelConfig.model_fields
            return {k: v for k, v in source.items() if k in fields and k != "name"}
        merged = {**(self.args or {}), **source}
        return {k: merged[k] for k in _UPSTREAM_ARCH_FIELDS if merged.get(k) is not None}

    @property
    def num_queries(self) -> int | None:
        """Queries per group the weights were trained with, when the file records it."""
        return self._setting("num_queries")

    @property
    def group_detr(self) -> int | None:
        """Query groups the weights were trained with, when the file records it."""
        return self._setting("group_detr")

    def _setting(self, key: str) -> int | None:
        for source in (self.model_section, self.args or {}):
            value = source.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None

    @property
    def size(self) -> str | None:
        """The preset named by our config's ``name`` or upstream's ``model_name``, else None."""
        presets = {_key(p): p for p in list_presets()}
        for name in (self.model_section.get("name"), self.extras.get("model_name")):
            if isinstance(name, str) and _key(name) in presets:
                return presets[_key(name)]
        return None

    def require_size(self) -> str:
        """:attr:`size`, or a one-line `CheckpointError` saying to pass it."""
        if self.size is None:
            raise CheckpointError(
                f"{self.path}: the checkpoint does not record its model size; pass it "
                f"(--size / size=), one of {list_presets()}"
            )
        return self.size

    @property
    def dataset_ids(self) -> list[int] | None:
        """The dataset id of each 0-based class id (COCO-id logit columns, else the run
        config's ``data.class_map``), or None."""
        if self.label_to_logit is not None:
            return list(self.label_to_logit)
        run = self.run_config
        class_map = run.data.class_map if run is not None else None
        if not class_map or not isinstance(class_map.get("source_ids"), list):
            return None
        ids = [int(i) for i in class_map["source_ids"]]
        return ids if len(ids) == self.num_classes else None


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower()).removeprefix("rfdetr")


def read_checkpoint(path: str | os.PathLike[str]) -> LoadedCheckpoint:
    """Read a checkpoint file safely and describe it; nothing is loaded into a model yet.

    Raises:
        CheckpointError: The file (``.pth``/``.pt``/``.ckpt``, a format of the module docstring)
            is missing, empty, truncated, not a checkpoint, holds non-finite weights, or needs a
            Python global outside the allow-list. The one-line message names the file.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise CheckpointError(
            f"{file}: no such checkpoint file; pass the path of an existing .pth file, "
            "or pretrain_weights=None for random initialisation"
        )
    raw = fmt.safe_load(file)
    if not isinstance(raw, dict):
        raise CheckpointError(
            f"{file}: not an RF-DETR checkpoint: it holds a {type(raw).__name__}, not a dict with "
            "a 'model' state dict; save checkpoints as torch.save({'model': state_dict, ...})"
        )
    kind, state_dict = fmt.extract_state_dict(raw, file)
    fmt.check_tensors(state_dict, file)
    head = state_dict.get("class_embed.bias")
    if head is None or head.ndim != 1 or head.shape[0] < 2:
        raise CheckpointError(
            f"{file}: the state dict has no usable 'class_embed.bias' (the class head), so it is "
            "not an RF-DETR detector checkpoint"
        )
    num_classes = int(head.shape[0]) - 1
    config, args = fmt.extract_config(raw, kind)
    raw_names = raw.get("class_names") if kind == "rfdetr" else (args or {}).get("class_names")
    names, label_to_logit = fmt.class_mapping(raw_names, num_classes, kind, args, file)
    epoch, metrics, ema = raw.get("epoch"), raw.get("metrics"), raw.get("ema")
    ema_weights = ema.get("module") if isinstance(ema, dict) else None
    if ema_weights is not None:
        fmt.check_tensors(ema_weights, file, "ema")
    return LoadedCheckpoint(
        path=file,
        format=kind,
        state_dict=state_dict,
        num_classes=num_classes,
        class_names=names,
        label_to_logit=label_to_logit,
        config=config,
        args=args,
        epoch=epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None,
        metrics=dict(metrics) if isinstance(metrics, dict) else None,
        ema_state_dict=dict(ema_weights) if ema_weights is not None else None,
        extras={
            k: raw[k]
            for k in ("model_name", "rfdetr_version", "best_total_source", "global_step")
            if isinstance(raw.get(k), (str, int))
        },
    )


def load_weights(
    model: torch.nn.Module,
    checkpoint: str | os.PathLike[str] | LoadedCheckpoint,
    *,
    num_classes: int | None = None,
    num_queries: int | None = None,
    group_detr: int | None = None,
) -> LoadedCheckpoint:
    """Read a checkpoint (or take one already read) and load it strictly into ``model``.

    ``num_classes``/``num_queries``/``group_detr`` are the model's: a different class count
    resizes the class heads (logged); the queries enable query truncation.

    Returns:
        The checkpoint read; after a head resize with the model's ``num_classes`` and no
        ``class_names``/``label_to_logit`` (they no longer describe the head).

    Raises:
        CheckpointError: As :func:`read_checkpoint` and
            :func:`rfdetr.weights.load_state_dict_strict`.
    """
    loaded = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else read_checkpoint(checkpoint)
    reinit = num_classes if num_classes is not None and num_classes != loaded.num_classes else None
    total = num_queries * group_detr if num_queries and group_detr else None
    load_state_dict_strict(
        model,
        loaded.state_dict,
        source=str(loaded.path),
        num_queries_total=total,
        reinit_head_for=reinit,
        group_detr=group_detr,
        checkpoint_group_detr=loaded.group_detr,
    )
    if reinit is None:
        return loaded
    return replace(loaded, num_classes=reinit, class_names=None, label_to_logit=None)


def load_model(
    checkpoint: str | os.PathLike[str] | LoadedCheckpoint,
    base: ModelConfig | None = None,
    **overrides: Any,
) -> tuple[RFDETR, ModelConfig, LoadedCheckpoint]:
    """The model a checkpoint describes, its weights loaded strictly.

    Args:
        checkpoint: A file path or the result of :func:`read_checkpoint`.
        base: The config for fields the file does not record (default: its preset).
        **overrides: `ModelConfig` fields applied last (``num_classes``: as :func:`load_weights`).

    Returns:
        (the model on the CPU in eval mode, its config, the checkpoint as loaded).

    Raises:
        CheckpointError: the file cannot be read or does not fit, or (without ``base``) it
            does not record its model size.
    """
    loaded = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else read_checkpoint(checkpoint)
    base = base or get_preset(loaded.require_size())
    recorded = {**loaded.architecture, "num_classes": loaded.num_classes}
    try:
        config = base.with_overrides(**{**recorded, **overrides})
    except ValueError:  # pydantic's ValidationError: the file's fields, or the caller's
        try:
            base.with_overrides(**recorded)
        except ValueError as err:
            raise CheckpointError(
                f"{loaded.path}: the model config it records is not valid: {fmt.one_line(err)}"
            ) from None
        raise
    model = build_model(config)
    loaded = load_weights(
        model,
        loaded,
        num_classes=config.num_classes,
        num_queries=config.num_queries,
        group_detr=config.group_detr,
    )
    return model.eval(), config, loaded
