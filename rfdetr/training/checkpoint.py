"""The checkpoint files of a training run, written atomically, readable with weights_only=True.

``checkpoint.pth``
    Every epoch: everything a resume needs (model, EMA, optimizer, scheduler, grad scaler,
    epoch, optimizer step, random states, best-so-far trackers) plus the run config, class names
    and metrics, all as plain data.
``checkpoint_<N>.pth``
    The same, kept every ``checkpoint_interval`` epochs (``N``: 0-based epoch, as upstream).
``checkpoint_best_regular.pth`` / ``checkpoint_best_ema.pth``
    Weights of the best epoch of the trained / EMA model + config + class names + metrics.
``checkpoint_best_total.pth``
    The better of the two by validation mAP50:95 (bbox, or segm for Seg; EMA only when strictly
    better, as upstream), stripped to weights + config + class names + metrics.

Every file holds ``format``, ``model``, ``config`` (the run config: the architecture is under
``config["model"]``), ``class_names``, ``epoch`` and ``metrics``, so any of them loads with
``RFDETRNano(pretrain_weights=path)`` and :func:`rfdetr.weights.read_checkpoint`. The dataset's
class ids travel in ``config["data"]["class_map"]``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from rfdetr.checkpoint_format import (
    CHECKPOINT_FORMAT,
    TMP_SUFFIX,
    CheckpointError,
    atomic_save,
    one_line,
    require_plain,
)
from rfdetr.training.upstream_resume import upstream_resume_state
from rfdetr.weights import save_checkpoint

logger = logging.getLogger(__name__)

LAST = "checkpoint.pth"
BEST_REGULAR = "checkpoint_best_regular.pth"
BEST_EMA = "checkpoint_best_ema.pth"
BEST_TOTAL = "checkpoint_best_total.pth"
TRAINING_KEYS = ("model", "optimizer", "scheduler", "epoch", "global_step", "config")
_PLAIN_KEYS = ("config", "class_names", "epoch", "global_step", "metrics", "trackers")


def periodic_name(epoch: int) -> str:
    """File name of the periodic checkpoint of 0-based ``epoch``."""
    return f"checkpoint_{epoch}.pth"


def read_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """One of our checkpoint files as a dict (``weights_only=True``).

    Raises:
        CheckpointError: missing, truncated, hostile (a pickle ``weights_only`` refuses) or not
            a dict; one line naming the file.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise CheckpointError(f"{file}: no such checkpoint file")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # any parse failure means a damaged or foreign file
        raise CheckpointError(f"{file}: cannot read checkpoint ({one_line(err)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: not a checkpoint (holds a {type(state).__name__})")
    return state


def remove_stale_temporaries(output_dir: str | os.PathLike[str]) -> list[Path]:
    """Delete ``.checkpoint*.pth.<random>.tmp`` files a killed writer left in ``output_dir``.

    Call only at the start of a run (no writer of this folder is running then).
    """
    stale = sorted(Path(output_dir).glob(f".checkpoint*.pth.*{TMP_SUFFIX}"))
    for path in stale:
        path.unlink(missing_ok=True)
        logger.info("removed %s, left by an interrupted checkpoint write", path)
    return stale


def save_training_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Write a resumable checkpoint.

    Args:
        path: destination.
        state: at least :data:`TRAINING_KEYS`; tensors, state dicts and plain data only
            (``config``, ``class_names``, ``metrics`` and ``trackers`` are checked to be plain).

    Raises:
        KeyError: a required key is missing.
        TypeError: a metadata entry is not plain data.
    """
    missing = [key for key in TRAINING_KEYS if key not in state]
    if missing:
        raise KeyError(f"training checkpoint lacks {missing}")
    for key in _PLAIN_KEYS:
        if key in state:
            require_plain(state[key], key)
    return atomic_save({"format": CHECKPOINT_FORMAT, **state}, path)


def load_training_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_training_checkpoint` (``weights_only=True``).

    Raises:
        CheckpointError: the file is missing, unreadable, or holds weights only (a best or
            stripped file cannot resume a run; it can start a new one as ``pretrain_weights``).
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise CheckpointError(f"{file}: no such checkpoint file to resume from")
    state = upstream_resume_state(state := read_state(file), file) or state
    if any(key not in state for key in TRAINING_KEYS):
        raise CheckpointError(
            f"{file}: not a resumable training checkpoint (no optimizer state); resume from "
            f"{LAST} or a checkpoint_<N>.pth, or pass this file as pretrain_weights instead"
        )
    return state


def save_weights(
    path: str | os.PathLike[str],
    state_dict: Mapping[str, torch.Tensor],
    *,
    config: Mapping[str, Any],
    class_names: list[str] | None,
    epoch: int | None,
    metrics: Mapping[str, Any] | None,
) -> Path:
    """A weights-only checkpoint (no optimizer): :func:`rfdetr.weights.save_checkpoint`."""
    return save_checkpoint(
        path, state_dict, config=config, class_names=class_names, epoch=epoch, metrics=metrics
    )


def strip_checkpoint(
    source: str | os.PathLike[str], dest: str | os.PathLike[str], *, use_ema: bool = False
) -> Path:
    """Copy one of our checkpoints to ``dest`` as weights + config + class names + metrics.

    Args:
        source: any checkpoint this module wrote.
        dest: the stripped file.
        use_ema: take the EMA weights of a training checkpoint instead of the trained ones.
    """
    file = Path(source)
    state = read_state(file)
    weights = state.get("model")
    if not isinstance(weights, dict):
        raise CheckpointError(f"{file}: holds no 'model' state dict")
    if use_ema:
        if not state.get("ema"):
            raise CheckpointError(f"{file}: holds no EMA weights")
        weights = state["ema"]["module"]
    return save_weights(
        dest,
        weights,
        config=state.get("config") or {},
        class_names=state.get("class_names"),
        epoch=state.get("epoch"),
        metrics=state.get("metrics"),
    )


def score_of(metrics: Mapping[str, Any] | None) -> float | None:
    """The selection score stored in a best checkpoint's metrics (primary mAP50:95)."""
    if not metrics:
        return None
    value = metrics.get("map_50_95")
    return float(value) if isinstance(value, (int, float)) else None


def select_best(output_dir: str | os.PathLike[str]) -> Path:
    """Write ``checkpoint_best_total.pth`` from the better of the best regular and EMA files.

    The EMA file wins only when its mAP is strictly higher (upstream's rule). Training keeps
    the file up to date itself; this is for pipelines that select in a separate step.

    Raises:
        CheckpointError: neither best file exists.
    """
    folder = Path(output_dir)
    candidates = []
    for name in (BEST_REGULAR, BEST_EMA):  # regular first: it wins ties
        file = folder / name
        if file.is_file():
            score = score_of(read_state(file).get("metrics"))
            candidates.append((score if score is not None else float("-inf"), file))
    if not candidates:
        raise CheckpointError(f"{folder}: neither {BEST_REGULAR} nor {BEST_EMA} exists")
    best_file = candidates[0][1]
    if len(candidates) == 2 and candidates[1][0] > candidates[0][0]:
        best_file = candidates[1][1]
    logger.info("best total checkpoint: %s", best_file.name)
    return strip_checkpoint(best_file, folder / BEST_TOTAL)
