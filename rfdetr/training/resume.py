"""Resuming a run from ``checkpoint.pth``: compatibility checks, finished runs, restoring state.

A resume restores everything that makes the continuation identical to an uninterrupted run:
model, EMA, optimizer, schedule position, grad scaler, best-so-far trackers, early-stopping
counters and every process's random streams. The loader order depends only on (seed, epoch).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rfdetr.checkpoints.upstream_resume import (
    UPSTREAM_RESUME,
    upstream_optimizer_in,
    upstream_resume_mismatch,
)
from rfdetr.config import RUNTIME_MODEL_FIELDS, ConfigError, RunConfig
from rfdetr.training.distributed import DistInfo
from rfdetr.training.early_stopping import BestTracker, EarlyStopping
from rfdetr.training.ema import ModelEMA
from rfdetr.training.outputs import TrainResult
from rfdetr.training.runtime import restore_rng_state
from rfdetr.training.step import TrainSession

logger = logging.getLogger(__name__)


def check_resume_matches(state: dict[str, Any], config: RunConfig) -> None:
    if state.get("format") == UPSTREAM_RESUME:  # no RunConfig inside: compare what it records
        names = (config.data.class_map or {}).get("names", [])
        problem = upstream_resume_mismatch(state, config.model.model_dump(mode="json"), names)
        if problem:
            raise ConfigError(f"{config.train.resume}: {problem}")
        return
    saved = RunConfig.model_validate(state["config"])
    for key, value in config.model.model_dump().items():
        if key not in RUNTIME_MODEL_FIELDS and getattr(saved.model, key) != value:
            raise ConfigError(
                f"{config.train.resume}: the checkpoint's model has {key}="
                f"{getattr(saved.model, key)!r}, this run {value!r}; resume with the same model"
            )
    if saved.data.class_map != config.data.class_map:
        raise ConfigError(
            f"{config.train.resume}: the checkpoint was trained on other classes "
            f"({saved.data.class_map}); resume on the same dataset classes"
        )


def is_finished(state: dict[str, Any], config: RunConfig) -> bool:
    return bool(state.get("stopped_early")) or int(state["epoch"]) + 1 >= config.train.epochs


def finished_result(
    state: dict[str, Any], config: RunConfig, class_names: list[str]
) -> TrainResult:
    done = int(state["epoch"]) + 1
    reason = "stopped early" if state.get("stopped_early") else f"epochs={config.train.epochs}"
    logger.warning(
        "%s: the run already finished (%d epochs completed, %s); nothing to train. Pass a "
        "larger epochs to continue it.",
        config.train.resume,
        done,
        reason,
    )
    return TrainResult.from_run_dir(
        Path(config.train.resume).parent,
        class_names=class_names,
        epochs_completed=done,
        stopped_early=bool(state.get("stopped_early")),
        already_finished=True,
    )


def restore(
    session: TrainSession,
    tracker: BestTracker,
    stopper: EarlyStopping | None,
    state: dict[str, Any],
    info: DistInfo,
) -> int:
    """Load a resume checkpoint into the session; returns the first epoch to train."""
    if state.get("format") == UPSTREAM_RESUME:
        name_of = {id(p): n for n, p in session.model.named_parameters()}
        groups = session.optimizer.param_groups
        names = [name_of[id(p)] for group in groups for p in group["params"]]
        current, source = session.optimizer.state_dict(), str(session.config.train.resume)
        optimizer, scheduler = upstream_optimizer_in(state, current, names, source)
        state = {**state, "optimizer": optimizer, "scheduler": scheduler}
    session.model.load_state_dict(state["model"], strict=True)
    if session.ema is not None:
        if state.get("ema"):
            session.ema.load_state_dict(state["ema"])
        else:
            logger.warning("the checkpoint has no EMA weights; the EMA restarts from the model")
            session.ema = ModelEMA(session.model, session.ema.decay, session.ema.tau)
    session.optimizer.load_state_dict(state["optimizer"])
    schedule = session.scheduler.lr_lambdas
    session.scheduler.load_state_dict(state["scheduler"])
    session.scheduler.lr_lambdas = schedule  # this run's schedule (e.g. a longer cosine)
    if state.get("scaler") and session.scaler.is_enabled():
        session.scaler.load_state_dict(state["scaler"])
    session.global_step = int(state["global_step"])
    trackers = state.get("trackers") or {}
    for key, value in (trackers.get("best") or {}).items():
        setattr(tracker, key, value)
    if stopper is not None and trackers.get("early_stopping"):
        stopper.load_state_dict(trackers["early_stopping"])
    streams = state.get("rng") or []
    if streams:
        stream = streams[info.rank] if info.rank < len(streams) else streams[0]
        restore_rng_state(stream, session.device)
    epoch = int(state["epoch"]) + 1
    logger.info("resuming from %s at epoch %d", session.config.train.resume, epoch)
    return epoch
