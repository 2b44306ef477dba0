"""The only writer of our checkpoint files (atomic, plain data) and the run folder's layout.

``checkpoint.pth`` (every epoch) and ``checkpoint_<N>.pth`` (every ``checkpoint_interval``
epochs, ``N`` 0-based as upstream) hold everything a resume needs; ``checkpoint_best_regular``/
``_ema.pth`` the best epoch's weights of the trained / EMA model; ``checkpoint_best_total.pth``
the better of the two by mAP50:95 (EMA only when strictly better, as upstream). Every file holds
``format``, ``model``, ``config`` (the run config: architecture under ``["model"]``, the dataset's
classes under ``["data"]["class_map"]``), ``class_names``, ``epoch`` and ``metrics``.
Upstream 1.11's Lightning ``last.ckpt`` resumes too, converted into the layout of ours.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from rfdetr.checkpoints.formats import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    check_tensors,
    extract_state_dict,
    one_line,
    safe_load,
    upstream_fields,
)
from rfdetr.checkpoints.reader import read_checkpoint
from rfdetr.config import RunConfig
from rfdetr.utils.atomic import TMP_SUFFIX, link_or_copy, write_atomic

logger = logging.getLogger(__name__)

LAST = "checkpoint.pth"
BEST_REGULAR = "checkpoint_best_regular.pth"
BEST_EMA = "checkpoint_best_ema.pth"
BEST_TOTAL = "checkpoint_best_total.pth"
TRAINING_KEYS = ("model", "optimizer", "scheduler", "epoch", "global_step", "config")
_PLAIN_KEYS = (
    "config", "class_names", "epoch", "global_step", "metrics", "trackers", "args", "model_config",
)  # fmt: skip


UPSTREAM_RESUME = "upstream-lightning"  # the ``format`` of a converted resume state


def upstream_resume_state(raw: dict[str, Any], file: Path) -> dict[str, Any] | None:
    """Our resume layout from upstream rfdetr 1.11's Lightning ``last.ckpt``; None for other files.

    Upstream keeps the weights under ``state_dict`` (``model.`` prefix), one AdamW state and one
    ``LambdaLR`` state (``optimizer_states``, ``lr_schedulers``; stepped per optimizer step, as
    ours), the EMA in ``callbacks["RFDETREMACallback"]`` (an ``AveragedModel``: ``module.model.``
    prefix, ``n_averaged`` = our ``updates``, same decay ramp) and the last finished 0-based
    ``epoch``. Its optimizer groups are ours in another order
    (:func:`rfdetr.training.resume.upstream_optimizer_in`).

    Raises:
        CheckpointError: a Lightning file without exactly one optimizer and one scheduler.
    """
    if raw.get("format") == CHECKPOINT_FORMAT or not isinstance(raw.get("state_dict"), dict):
        return None
    optimizers, schedulers = raw.get("optimizer_states") or [], raw.get("lr_schedulers") or []
    if len(optimizers) != 1 or len(schedulers) != 1:
        raise CheckpointError(
            f"{file}: an upstream Lightning checkpoint with {len(optimizers)} optimizer and "
            f"{len(schedulers)} scheduler states; a resume needs exactly one of each (upstream's "
            "AdamW and LambdaLR); pass the file as pretrain_weights to start a new run from it"
        )
    _, weights = extract_state_dict(raw, file)
    callback = (raw.get("callbacks") or {}).get("RFDETREMACallback") or {}
    averaged = callback.get("average_model_state_dict") or {}
    prefix = "module.model."
    ema = {k.removeprefix(prefix): v for k, v in averaged.items() if k.startswith(prefix)}
    args = raw.get("args") if isinstance(raw.get("args"), dict) else {}
    return {
        "format": UPSTREAM_RESUME,
        "model": _drop_empty(weights),
        "ema": {"module": _drop_empty(ema), "updates": int(averaged["n_averaged"])}
        if ema
        else None,
        "optimizer": optimizers[0],
        "scheduler": schedulers[0],
        "epoch": int(raw["epoch"]),
        "global_step": int(raw["global_step"]),
        "class_names": args.get("class_names"),
        "model_config": raw.get("model_config") or {},
        "config": None,  # not our RunConfig: see training.resume.check_resume_matches
    }


def _drop_empty(weights: dict[str, Any]) -> dict[str, Any]:
    # without upstream's empty keypoint buffer, which our detectors do not have
    return {k: v for k, v in weights.items() if not (k == "_kp_active_mask" and v.numel() == 0)}


def periodic_name(epoch: int) -> str:
    """File name of the periodic checkpoint of 0-based ``epoch``."""
    return f"checkpoint_{epoch}.pth"


def save_checkpoint(
    path: str | os.PathLike[str],
    state_dict: Mapping[str, torch.Tensor],
    *,
    config: Mapping[str, Any],
    class_names: list[str] | None,
    epoch: int | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Write a weights-only checkpoint (no optimizer) to ``path``, atomically, as plain data.

    ``config`` is the run (or model) config as ``model_dump(mode="json")``; the weights are
    copied to CPU. The file loads with ``torch.load(weights_only=True)`` and no allow-list.

    Raises:
        TypeError: ``config``, ``class_names`` or ``metrics`` hold something that is not plain data.
    """
    payload: dict[str, Any] = {
        "model": {k: v.detach().cpu() for k, v in state_dict.items()},
        "config": dict(config),
        "class_names": list(class_names) if class_names is not None else None,
        "epoch": epoch,
        "metrics": dict(metrics) if metrics is not None else None,
        **upstream_fields(config, class_names),  # what upstream rfdetr 1.11.2 reads
    }
    return _write(path, payload)


def save_training_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    """Write a resumable checkpoint: ``state`` holds at least :data:`TRAINING_KEYS`, as
    tensors, state dicts and plain data.

    Raises:
        KeyError: a required key is missing.
        TypeError: a metadata entry is not plain data.
    """
    missing = [key for key in TRAINING_KEYS if key not in state]
    if missing:
        raise KeyError(f"training checkpoint lacks {missing}")
    return _write(path, state)


def _write(path: str | os.PathLike[str], state: Mapping[str, Any]) -> Path:
    for key in _PLAIN_KEYS:
        if key in state:
            require_plain(state[key], key)
    return atomic_save({"format": CHECKPOINT_FORMAT, **state}, path)


def atomic_save(payload: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """``torch.save`` ``payload`` to ``path`` atomically (:func:`rfdetr.utils.atomic.write_atomic`).

    Raises:
        CheckpointError: the write failed (one line with the errno name and the file); the
            previous ``path`` is untouched and the temporary removed.
    """
    return write_atomic(
        path, lambda out: torch.save(dict(payload), out), what="checkpoint", error=CheckpointError
    )


def link_checkpoint(source: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """Give ``source`` the second name ``path`` (:func:`rfdetr.utils.atomic.link_or_copy`).

    Raises:
        CheckpointError: as :func:`atomic_save`.
    """
    return link_or_copy(source, path, what="checkpoint", error=CheckpointError)


def require_plain(value: Any, where: str) -> None:
    """Raise TypeError unless ``value`` is plain data (what ``weights_only=True`` loads)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            require_plain(item, where)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"checkpoint {where}: key {key!r} is not a str or int")
            require_plain(item, f"{where}.{key}")
        return
    raise TypeError(
        f"checkpoint {where} holds a {type(value).__name__}; only plain data (None, bool, int, "
        "float, str, list, dict) keeps checkpoints loadable with weights_only=True"
    )


def remove_stale_temporaries(output_dir: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporaries a killed writer left in ``output_dir`` (call before any write)."""
    stale = sorted(Path(output_dir).glob(f".checkpoint*.pth.*{TMP_SUFFIX}"))
    for path in stale:
        path.unlink(missing_ok=True)
        logger.info("removed %s, left by an interrupted checkpoint write", path)
    return stale


def load_training_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Everything :func:`save_training_checkpoint` wrote (or upstream's ``last.ckpt``), as a dict.

    Raises:
        CheckpointError: the file is missing, unreadable, damaged, or holds weights only.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise CheckpointError(f"{file}: no such checkpoint file to resume from")
    state = safe_load(file)
    converted = upstream_resume_state(state, file) if isinstance(state, dict) else None
    if converted is not None:  # upstream 1.11's Lightning last.ckpt, in our layout
        state = converted
    elif isinstance(state, dict) and state.get("format") == UPSTREAM_RESUME:
        raise CheckpointError(f"{file}: claims to be a converted upstream state; it is not")
    if not isinstance(state, dict) or any(key not in state for key in TRAINING_KEYS):
        raise CheckpointError(
            f"{file}: not a resumable training checkpoint (no optimizer state); resume from "
            f"{LAST} or a checkpoint_<N>.pth, or pass this file as pretrain_weights instead"
        )
    _check_training_state(state, file)
    return state


def _check_training_state(state: dict[str, Any], file: Path) -> None:
    check_tensors(state["model"], file)
    ema = state.get("ema")
    if ema is not None:
        if not isinstance(ema, dict) or not isinstance(ema.get("updates"), int):
            raise CheckpointError(f"{file}: its 'ema' is not an EMA state (module + updates)")
        check_tensors(ema.get("module"), file, "ema")
    for key, (fits, kind) in _TRAINING_TYPES.items():
        if not fits(state.get(key)):
            raise CheckpointError(
                f"{file}: its '{key}' is a {type(state.get(key)).__name__}, not {kind}; the "
                "file is damaged; resume from an earlier checkpoint"
            )
    if state.get("format") != UPSTREAM_RESUME:  # ours, whatever its "format" says
        try:
            RunConfig.model_validate(state["config"])
        except ValueError as err:  # pydantic's ValidationError
            raise CheckpointError(
                f"{file}: the run config it records is not valid ({one_line(err)}); the file is "
                "damaged or hand-made; resume from an earlier checkpoint"
            ) from None


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


_TRAINING_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "optimizer": (lambda value: isinstance(value, dict), "a dict"),
    "scheduler": (lambda value: isinstance(value, dict), "a dict"),
    "epoch": (_count, "an int >= 0"),
    "global_step": (_count, "an int >= 0"),
    "rng": (lambda value: value is None or isinstance(value, list), "a list"),
    "trackers": (lambda value: value is None or isinstance(value, dict), "a dict"),
}


def strip_checkpoint(
    source: str | os.PathLike[str], dest: str | os.PathLike[str], *, use_ema: bool = False
) -> Path:
    """Copy one of our checkpoints to ``dest`` as weights (EMA ones with ``use_ema``) + config +
    class names + metrics."""
    checkpoint = read_checkpoint(source)
    weights = checkpoint.state_dict
    if use_ema:
        if checkpoint.ema_state_dict is None:
            raise CheckpointError(f"{checkpoint.path}: holds no EMA weights")
        weights = checkpoint.ema_state_dict
    return save_checkpoint(
        dest,
        weights,
        config=checkpoint.config or {},
        class_names=checkpoint.class_names,
        epoch=checkpoint.epoch,
        metrics=checkpoint.metrics,
    )


def _score(file: Path) -> float:
    value = (read_checkpoint(file).metrics or {}).get("map_50_95")
    return float(value) if isinstance(value, (int, float)) else float("-inf")


def select_best(
    output_dir: str | os.PathLike[str], dest: str | os.PathLike[str] | None = None
) -> Path:
    """Write ``checkpoint_best_total.pth`` from the better of the best regular and EMA files of
    ``output_dir``, next to them or as the file ``dest`` (``output_dir`` is then not written to).

    The EMA file wins only when its mAP is strictly higher (upstream's rule); for pipelines
    that select in a separate step.

    Raises:
        CheckpointError: neither best file exists, or one cannot be read.
    """
    folder = Path(output_dir)
    candidates = [folder / name for name in (BEST_REGULAR, BEST_EMA) if (folder / name).is_file()]
    if not candidates:
        raise CheckpointError(f"{folder}: neither {BEST_REGULAR} nor {BEST_EMA} exists")
    best_file = max(candidates, key=_score)  # the first maximum: regular wins ties
    logger.info("best total checkpoint: %s", best_file.name)
    return strip_checkpoint(best_file, folder / BEST_TOTAL if dest is None else dest)
