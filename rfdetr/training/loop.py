"""The training driver: :func:`fit` reads top to bottom, one named helper per stage."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rfdetr import checkpoints as files
from rfdetr.checkpoints.formats import CheckpointError
from rfdetr.config import ConfigError, RunConfig
from rfdetr.models.detector import RFDETR
from rfdetr.training.distributed import DistInfo, broadcast, cleanup, gather, setup_distributed
from rfdetr.training.ema import ModelEMA
from rfdetr.training.loggers import RunLogger, check_loggers, read_log
from rfdetr.training.optim import build_optimizer, build_scheduler
from rfdetr.training.outputs import TrainResult, evaluate_split_models, finish_epoch, write_results
from rfdetr.training.resume import check_resume_matches, finished_result, restore
from rfdetr.training.runtime import (
    capture_rng_state,
    check_compile,
    configure_tf32,
    resolve_device,
    resolve_precision,
    seed_everything,
    tuned_allocator,
)
from rfdetr.training.setup import (
    Datasets,
    TrainBatches,
    build_criterion,
    build_datasets,
    prepare_model,
)
from rfdetr.training.step import EarlyStopping, TrainSession, train_one_epoch

logger = logging.getLogger(__name__)

CONFIG_FILE = "run.yaml"
PLOT_FILE = "metrics_plot.png"


def fit(config: RunConfig, *, model: RFDETR | None = None) -> TrainResult:
    """Train an RF-DETR model as ``config`` says; see :mod:`rfdetr.training`.

    Args:
        config: the run.
        model: a model to fine-tune in place of building one from ``config.model`` and
            ``train.pretrain_weights`` (a head of another class count is re-initialised).

    Returns:
        The run's outputs; under ``torchrun`` every process returns once rank 0 wrote them.

    Raises:
        ConfigError, DatasetError, CheckpointError: unusable settings, data or resume file.
        NonFiniteLossError: the loss became NaN/inf (the last good ``checkpoint.pth`` stays).
    """
    try:  # resolve_device raises again, with its message, once the group is joined
        use_cuda = resolve_device(config.train.device).type == "cuda"
    except ConfigError:
        use_cuda = False
    info = setup_distributed(use_cuda=use_cuda)
    try:
        device = resolve_device(config.train.device, info)
        with tuned_allocator(device):
            result = _fit(config, model, info, device)
    except BaseException:
        cleanup(info, failed=True)
        raise
    cleanup(info)
    return result


def _fit(
    config: RunConfig, model: RFDETR | None, info: DistInfo, device: torch.device
) -> TrainResult:
    check_compile(config.train, device)
    configure_tf32(device, config.train.tf32)
    check_loggers(config.log)
    out = Path(config.train.output_dir)
    taken = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if taken is not None:  # before any work, as `rfdetr train` reports mkdir's OSError late
        raise ConfigError(f"output_dir {out}: exists and is not a folder ({taken}); pass a folder")
    resume = files.load_training_checkpoint(config.train.resume) if config.train.resume else None
    _check_same_resume(config, resume, info)
    datasets = build_datasets(config)
    classes = datasets.class_map
    config = config.with_overrides(
        {"data.class_map": classes.to_dict(), "num_classes": classes.num_classes}
    )
    if resume is not None:
        check_resume_matches(resume, config)
        finished = finished_result(resume, config, list(classes.names))
        if finished is not None:
            return finished
    seed_everything(config.train.seed + info.rank)
    model = prepare_model(config, model, classes.num_classes).to(device)
    batches = TrainBatches(datasets.train, config, info, device)
    session = _build_session(config, model, datasets, len(batches), device, info)
    start_epoch = restore(session, resume) if resume is not None else 0
    session.run_logger = _start_outputs(config, info, start_epoch)
    stopped, last_epoch = False, start_epoch - 1
    try:
        for epoch in range(start_epoch, config.train.epochs):
            started = time.perf_counter()
            stats = train_one_epoch(session, batches.epoch(epoch), epoch)
            stopped, last_epoch = _end_epoch(session, epoch, stats, started), epoch
            if stopped:
                logger.info("early stopping after epoch %d", epoch)
                break
    finally:
        if session.run_logger is not None:
            session.run_logger.close()
    return _final_result(session, stopped, last_epoch)


def _build_session(
    config: RunConfig,
    model: RFDETR,
    datasets: Datasets,
    steps_per_epoch: int,
    device: torch.device,
    info: DistInfo,
) -> TrainSession:
    train = config.train
    optimizer = build_optimizer(model, train, config.model, device)
    forward_model: nn.Module = model
    if info.enabled:
        # Some parameters get no gradient in a step (e.g. DINOv2's mask token), so DDP must
        # look for unused ones, as upstream does.
        forward_model = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    if train.compile:
        forward_model = torch.compile(forward_model)
    precision = resolve_precision(train, device)
    stopper = EarlyStopping(
        train.early_stopping_patience, train.early_stopping_min_delta, train.early_stopping_use_ema
    )
    return TrainSession(
        config=config,
        model=model,
        forward_model=forward_model,
        criterion=build_criterion(config).to(device),
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, train, steps_per_epoch),
        scaler=torch.amp.GradScaler(device.type, enabled=precision.needs_scaler),
        ema=ModelEMA(model, train.ema_decay, train.ema_tau) if train.use_ema else None,
        precision=precision,
        device=device,
        dist=info,
        sizes=list(datasets.train.sizes) if config.data.multi_scale else [],
        stopper=stopper if train.early_stopping else None,
        valid=datasets.valid,
        test=datasets.test,
        class_names=list(datasets.class_map.names),
    )


def _start_outputs(config: RunConfig, info: DistInfo, start_epoch: int) -> RunLogger | None:
    if not info.is_main:
        return None
    train = config.train
    logger.info(
        "effective batch: %d images per optimizer step (batch_size %d x grad_accum_steps %d x "
        "%d processes)",
        config.effective_batch_size(info.world_size),
        train.batch_size,
        train.grad_accum_steps,
        info.world_size,
    )
    output_dir = Path(train.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    files.remove_stale_temporaries(output_dir)
    config.to_file(output_dir / CONFIG_FILE)
    resume_epoch = start_epoch - 1 if train.resume else None
    return RunLogger(output_dir, config.log, config.model_dump(mode="json"), resume_epoch)


def _end_epoch(session: TrainSession, epoch: int, stats: dict[str, float], started: float) -> bool:
    info = session.dist
    rng_states = gather(capture_rng_state(session.device), info)
    stop = False
    if info.is_main and session.run_logger is not None:
        from rfdetr.evaluation.plots import plot_training_curves  # loss, mAP, lr per epoch

        stop = finish_epoch(session, epoch, stats, rng_states, started)
        plot_training_curves(
            read_log(session.run_logger.log_path),
            Path(session.config.train.output_dir) / PLOT_FILE,
        )
    # The others wait here until rank 0 has written this epoch's files.
    return bool(broadcast(stop, info))


def _check_same_resume(config: RunConfig, resume: dict[str, Any] | None, info: DistInfo) -> None:
    # On several nodes each process reads its own copy of the resume file.
    epochs = gather(None if resume is None else int(resume["epoch"]), info)
    if len(set(epochs)) > 1:
        raise CheckpointError(
            f"{config.train.resume}: the processes would resume after epochs {epochs} (by rank; "
            "None: no checkpoint); give every node the same checkpoint.pth"
        )


def _final_result(session: TrainSession, stopped: bool, last_epoch: int) -> TrainResult:
    output_dir = Path(session.config.train.output_dir)
    best = output_dir / files.BEST_TOTAL
    result = None
    if session.dist.is_main:
        if best.is_file():
            write_results(output_dir, _summary(session, best, stopped, last_epoch))
        result = TrainResult.from_run_dir(
            output_dir, class_names=session.class_names, stopped_early=stopped
        )
    # Only rank 0's node holds the files: every process returns what rank 0 read, once written.
    return replace(broadcast(result, session.dist), model=session.model)


def _summary(session: TrainSession, best: Path, stopped: bool, last_epoch: int) -> dict[str, Any]:
    config = session.config
    checkpoint = files.read_checkpoint(best)
    metrics = checkpoint.metrics or {}
    test = None
    if session.test is not None:
        # the module whose weights the best file holds, when it is in memory (else read the file)
        in_memory = {"regular": session.model, "ema": session.ema.module if session.ema else None}
        model = in_memory.get(metrics.get("source")) if metrics.get("epoch") == last_epoch else None
        if model is None:
            model = files.load_model(checkpoint, config.model)[0].to(session.device)
        test = evaluate_split_models(session, [model], session.test)[0].to_dict()
    return {
        "best_checkpoint": best.name,
        "best_source": metrics.get("source"),
        "best_epoch": metrics.get("epoch"),
        "map_50_95": metrics.get("map_50_95"),
        "map_50": metrics.get("map_50"),
        "valid": metrics.get("evaluation"),
        "test": test,
        "class_names": session.class_names,
        "class_map": config.data.class_map,
        "stopped_early": stopped,
    }
