"""Load our checkpoints and the upstream RF-DETR ``.pth`` files, strictly, as plain data.

Every file goes through ``torch.load(weights_only=True)``. Upstream files that pickle their training
arguments as a Namespace load through a scoped allow-list (:data:`UPSTREAM_SAFE_GLOBALS`); no
file is ever unpickled without that restriction.

Formats recognised by :func:`read_checkpoint` (the ``format`` of the result):

``"rfdetr"``
    Ours: ``{"format", "model", "config", "class_names", "epoch", "metrics"}``, written by
    :func:`save_checkpoint`.
``"upstream-legacy"``
    The official hosted weights and upstream 1.4.x training: ``{"model", "args", ...}`` where
    ``args`` is a pickled ``argparse.Namespace`` (full files add optimizer, scheduler, epoch).
``"upstream"``
    Upstream 1.11.x ``checkpoint_best_*.pth`` / ``last_ema.pth``: ``args`` is a dict, with
    ``model_name``, ``model_config`` and ``rfdetr_version`` alongside.
``"upstream-lightning"``
    Upstream 1.11.x Lightning ``.ckpt``: weights under ``state_dict`` with a ``model.`` prefix.

:func:`load_state_dict_strict` then fills a module: every tensor consumed, every parameter and
buffer filled, shapes checked. The two deliberate adaptations (fewer query rows, another class
count) happen only when asked for, and are logged. Official pretrained files: :mod:`rfdetr.hub`.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rfdetr import checkpoint_format as fmt
from rfdetr.checkpoint_format import (
    CHECKPOINT_FORMAT,
    UPSTREAM_SAFE_GLOBALS,
    CheckpointError,
    save_checkpoint,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_FORMAT",
    "UPSTREAM_SAFE_GLOBALS",
    "CheckpointError",
    "LoadedCheckpoint",
    "load_state_dict_strict",
    "load_weights",
    "read_checkpoint",
    "save_checkpoint",
]

QUERY_TABLE_KEYS = ("refpoint_embed.weight", "query_feat.weight")
"""Tables of ``num_queries * group_detr`` rows; group ``g`` owns rows ``[g*Q, (g+1)*Q)``."""

_CLASS_HEAD_KEY = re.compile(
    r"^(class_embed|transformer\.enc_out_class_embed\.\d+)\.(weight|bias)$"
)
_DROPPABLE_IF_EMPTY = ("_kp_active_mask",)  # upstream 1.11 keypoint buffer, (0, 0) in detectors


@dataclass(frozen=True)
class LoadedCheckpoint:
    """What a checkpoint file holds, as plain data.

    Attributes:
        path: The file read.
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
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def num_queries(self) -> int | None:
        """Queries per group the weights were trained with, when the file records it."""
        return fmt.config_int(self.config, self.args, "num_queries")

    @property
    def group_detr(self) -> int | None:
        """Query groups the weights were trained with, when the file records it."""
        return fmt.config_int(self.config, self.args, "group_detr")


def read_checkpoint(path: str | os.PathLike[str]) -> LoadedCheckpoint:
    """Read a checkpoint file safely and describe it; nothing is loaded into a model yet.

    Args:
        path: A ``.pth``/``.pt``/``.ckpt`` file in one of the formats in the module docstring.

    Returns:
        The weights and metadata.

    Raises:
        CheckpointError: The file is missing, empty, truncated, not a checkpoint, or needs a Python
            global outside :data:`UPSTREAM_SAFE_GLOBALS`. The one-line message names the file.
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
    raw_names = fmt.raw_class_names(raw, kind, args)
    names, label_to_logit = fmt.class_mapping(raw_names, num_classes, kind, args, file)
    epoch = raw.get("epoch")
    metrics = raw.get("metrics")
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
        extras={
            k: raw[k]
            for k in ("model_name", "rfdetr_version", "best_total_source", "global_step")
            if isinstance(raw.get(k), (str, int))
        },
    )


def load_state_dict_strict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str,
    num_queries_total: int | None = None,
    reinit_head_for: int | None = None,
    group_detr: int | None = None,
    checkpoint_group_detr: int | None = None,
    assign: bool = False,
) -> None:
    """Fill every parameter and buffer of ``model`` from ``state_dict``, or fail naming the key.

    Args:
        model: The module; its ``state_dict()`` keys are the contract.
        state_dict: Checkpoint weights (not modified).
        source: What the weights came from (a file path), quoted in errors and logs.
        num_queries_total: The model's ``num_queries * group_detr``. When given, query tables with
            more rows are cut down to it (logged); when None, any row difference is an error.
        reinit_head_for: Resize the class heads (``class_embed`` and every
            ``transformer.enc_out_class_embed.{g}``) to this many classes (+1 row) before loading,
            tiling or cropping the checkpoint's rows as upstream does (logged). None: no resize.
        group_detr: The model's query groups. With ``checkpoint_group_detr``, truncation keeps the
            first queries of each group; without, the first ``num_queries_total`` rows are kept
            (exact for group 0, the only group used at inference).
        checkpoint_group_detr: Query groups of the checkpoint (``LoadedCheckpoint.group_detr``).
        assign: Passed to ``nn.Module.load_state_dict`` (keep the checkpoint tensors, e.g. into a
            model built on the meta device).

    Raises:
        CheckpointError: A key is missing or unexpected, a shape differs, or a value is not a
            tensor; the one-line message names the first such key, both shapes and ``source``.
    """
    weights = dict(state_dict)
    expected = model.state_dict(keep_vars=True)
    _drop_known_extras(weights, expected, source)
    if num_queries_total is not None:
        _fit_query_tables(weights, num_queries_total, group_detr, checkpoint_group_detr, source)
    if reinit_head_for is not None:
        _resize_class_heads(weights, reinit_head_for + 1, source)
    _check_against(expected, weights, source)
    model.load_state_dict(weights, strict=True, assign=assign)


def load_weights(
    model: nn.Module,
    checkpoint: str | os.PathLike[str] | LoadedCheckpoint,
    *,
    num_classes: int | None = None,
    num_queries: int | None = None,
    group_detr: int | None = None,
) -> LoadedCheckpoint:
    """Read a checkpoint (or take one already read) and load it strictly into ``model``.

    Args:
        model: The module, built for ``num_classes`` / ``num_queries`` / ``group_detr``.
        checkpoint: A file path or the result of :func:`read_checkpoint`.
        num_classes: The model's class count. When it differs from the checkpoint's, the class
            heads are resized (logged) and the checkpoint's class names no longer apply.
        num_queries: The model's queries per group; with ``group_detr``, enables query truncation.
        group_detr: The model's query groups.

    Returns:
        The checkpoint read (class names, config, metadata). When the head was resized its
        ``num_classes`` is the model's and ``class_names``/``label_to_logit`` are None: the
        checkpoint's names no longer describe the head.

    Raises:
        CheckpointError: As :func:`read_checkpoint` and :func:`load_state_dict_strict`.
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


def _drop_known_extras(weights: dict[str, Any], expected: Mapping[str, Any], source: str) -> None:
    """Drop upstream-only buffers we know to be empty; a non-empty one stays and fails the load."""
    for key in _DROPPABLE_IF_EMPTY:
        value = weights.get(key)
        if key not in expected and isinstance(value, torch.Tensor) and value.numel() == 0:
            del weights[key]
            logger.debug("%s: dropped the empty upstream buffer %s", source, key)


def _fit_query_tables(
    weights: dict[str, Any],
    target_rows: int,
    group_detr: int | None,
    checkpoint_group_detr: int | None,
    source: str,
) -> None:
    """Cut ``refpoint_embed`` / ``query_feat`` down to ``target_rows`` (never up)."""
    for key in QUERY_TABLE_KEYS:
        table = weights.get(key)
        if not isinstance(table, torch.Tensor) or table.ndim == 0 or table.shape[0] <= target_rows:
            continue
        rows = table.shape[0]
        per_group = (
            group_detr is not None
            and checkpoint_group_detr is not None
            and rows % checkpoint_group_detr == 0
            and target_rows % group_detr == 0
            and group_detr <= checkpoint_group_detr
        )
        if per_group:
            old_q, new_q = rows // checkpoint_group_detr, target_rows // group_detr
            if new_q > old_q:  # more queries per group than trained: leave it to the shape check
                continue
            pieces = [table[g * old_q : g * old_q + new_q] for g in range(group_detr)]
            weights[key] = torch.cat(pieces, dim=0)
            logger.info(
                "%s: %s cut from %d to %d rows (first %d queries of %d groups)",
                source, key, rows, target_rows, new_q, group_detr,
            )  # fmt: skip
            continue
        weights[key] = table[:target_rows]
        logger.info("%s: %s cut from %d to its first %d rows", source, key, rows, target_rows)


def _resize_class_heads(weights: dict[str, Any], rows: int, source: str) -> None:
    """Tile or crop the rows of every class head to ``rows`` (= classes + 1)."""
    resized = []
    for key in [k for k in weights if _CLASS_HEAD_KEY.match(k)]:
        table = weights[key]
        old = table.shape[0]
        if old == rows:
            continue
        repeats = [math.ceil(rows / old)] + [1] * (table.ndim - 1)
        weights[key] = table.repeat(*repeats)[:rows].clone()
        resized.append(old)
    if resized:
        logger.info(
            "%s: class heads resized from %d to %d classes (rows tiled from the checkpoint's "
            "head; fine-tune before trusting the scores)",
            source,
            resized[0] - 1,
            rows - 1,
        )


def _check_against(expected: Mapping[str, Any], weights: Mapping[str, Any], source: str) -> None:
    """Raise on the first missing, unexpected, non-tensor or mis-shaped entry."""
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            shape = _shape(expected[missing[0]])
            parts.append(f"missing key '{missing[0]}' (model shape {shape}){_more(missing)}")
        if unexpected:
            shape = _shape(weights[unexpected[0]])
            parts.append(f"unexpected key '{unexpected[0]}' (shape {shape}){_more(unexpected)}")
        raise CheckpointError(
            f"{source}: checkpoint does not match the model: {'; '.join(parts)}; "
            "check that the model size/variant is the one the checkpoint was trained with"
        )
    for key, target in expected.items():
        value = weights[key]
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: '{key}' holds a {type(value).__name__}, not a tensor")
        if value.shape != target.shape:
            raise CheckpointError(
                f"{source}: shape mismatch for '{key}': checkpoint {_shape(value)} vs model "
                f"{_shape(target)}{_hint(key)}"
            )


def _hint(key: str) -> str:
    if _CLASS_HEAD_KEY.match(key):
        return (
            "; the class count differs: pass reinit_head_for (load_weights: num_classes) "
            "to resize the head explicitly"
        )
    if key in QUERY_TABLE_KEYS:
        return (
            "; the query count differs: pass num_queries_total (load_weights: num_queries and "
            "group_detr) to cut the query tables"
        )
    if key.endswith("position_embeddings") or "patch_embeddings" in key:
        return "; the checkpoint was trained with another resolution or patch size"
    return "; check that the model size/variant matches the checkpoint"


def _shape(value: Any) -> str:
    return str(list(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


def _more(keys: list[str]) -> str:
    return f" and {len(keys) - 1} more" if len(keys) > 1 else ""
