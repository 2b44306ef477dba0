"""Strict loading of a checkpoint's tensors into a module: every key, every shape (reading the
files: :mod:`rfdetr.checkpoints`)."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from rfdetr.checkpoints.formats import CheckpointError

logger = logging.getLogger(__name__)

QUERY_TABLE_KEYS = ("refpoint_embed.weight", "query_feat.weight")
"""Tables of ``num_queries * group_detr`` rows; group ``g`` owns rows ``[g*Q, (g+1)*Q)``."""

_CLASS_HEAD_KEY = re.compile(
    r"^(class_embed|transformer\.enc_out_class_embed\.\d+)\.(weight|bias)$"
)
_EMPTY_UPSTREAM_BUFFER = "_kp_active_mask"  # upstream 1.11 keypoint buffer, (0, 0) in detectors


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
    """Fill every parameter and buffer of ``model`` from ``state_dict`` (not modified), or fail
    naming the key. The two adaptations below happen only when asked for, and are logged.

    Args:
        source: What the weights came from (a file path), quoted in errors and logs.
        num_queries_total: The model's ``num_queries * group_detr``. When given, query tables with
            more rows are cut down to it; when None, any row difference is an error.
        reinit_head_for: Resize the class heads (``class_embed`` and every
            ``transformer.enc_out_class_embed.{g}``) to this many classes (+1 row), tiling or
            cropping the checkpoint's rows as upstream does. None: no resize.
        group_detr, checkpoint_group_detr: The model's and the checkpoint's query groups. With
            both, truncation keeps the first queries of each group; else the first
            ``num_queries_total`` rows (exact for group 0, the only group used at inference).
        assign: Passed to ``nn.Module.load_state_dict`` (e.g. into a meta-device model).

    Raises:
        CheckpointError: A key is missing or unexpected, a shape differs, or a value is not a
            tensor; the one-line message names the first such key, both shapes and ``source``.
    """
    weights = dict(state_dict)
    expected = model.state_dict(keep_vars=True)
    key, value = _EMPTY_UPSTREAM_BUFFER, weights.get(_EMPTY_UPSTREAM_BUFFER)
    if key not in expected and isinstance(value, torch.Tensor) and value.numel() == 0:
        del weights[key]  # a non-empty one stays and fails the load
        logger.debug("%s: dropped the empty upstream buffer %s", source, key)
    if num_queries_total is not None:
        _fit_query_tables(weights, num_queries_total, group_detr, checkpoint_group_detr, source)
    if reinit_head_for is not None:
        _resize_class_heads(weights, reinit_head_for + 1, source)
    _check_against(expected, weights, source)
    model.load_state_dict(weights, strict=True, assign=assign)


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
