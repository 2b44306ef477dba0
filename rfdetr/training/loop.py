"""The training driver: :func:`fit` reads top to bottom, one named helper per stage.

Stages: join the process group -> datasets and classes -> model, loss, optimizer, schedule,
EMA -> (resume) -> per epoch: train, evaluate, write files, maybe stop -> final results.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from rfdetr import checkpoints as files
from rfdetr.models.detector import RFDETR
from rfdetr.run_config import RunConfig
from rfdetr.training.distributed import (
    DistInfo,
    barrier,
    broadcast_bool,
    cleanup,
    setup_distributed,
)
from rfdetr.training.early_stopping import EarlyStopping
from rfdetr.training.ema import ModelEMA
from rfdetr.training.loggers import RunLogger, check_loggers, read_log
from rfdetr.training.optim import build_optimizer
from rfdetr.training.outputs import BestTracker, TrainResult, finish_epoch, write_results
from rfdetr.training.resume import check_resume_matches, finished_result, is_finished, restore
from rfdetr.training.runtime import (
    capture_rng_state,
    check_compile,
    configure_tf32,
    resolve_device,
    resolve_precision,
    seed_everything,
    tuned_allocator,
)
from rfdetr.training.schedule import build_scheduler
from rfdetr.training.setup import (
    Datasets,
    TrainBatches,
    build_criterion,
    build_datasets,
    prepare_model,
)
from rfdetr.training.step import TrainSession, train_one_epoch
from rfdetr.training.validation import evaluate

logger = logging.getLogger(__name__)

CONFIG_FILE = "run.yaml"
PLOT_FILE = "metrics_plot.png"


def fit(config: RunConfig, *, model: RFDETR | None = None) -> TrainResult:
    """Train an RF-DETR model as ``config`` says; see :mod:`rfdetr.training`.

    Args:
        config: the run (``model``, ``data``, ``train``, ``eval``, ``log`` sections).
        model: a model to fine-tune in place of building one from ``config.model`` and
            ``train.pretrain_weights``; its class head is re-initialised when the dataset has
            another class count (logged).

    Returns:
        The run's outputs; under ``torchrun`` every process returns once rank 0 wrote them.

    Raises:
        ConfigError, DatasetError, CheckpointError: unusable settings, data or resume file.
        NonFiniteLossError: the loss became NaN/inf (the last good ``checkpoint.pth`` stays).
    """
    info = setup_distributed(use_cuda=_wants_cuda(config))
    try:
        with tuned_allocator(resolve_device(config.train.device, info)):
            result = _fit(config, model, info)
    except BaseException:
        cleanup(info, failed=True)
        raise
    cleanup(info)
    return result


def _fit(config: RunConfig, model: RFDETR | None, info: DistInfo) -> TrainResult:
    device = resolve_device(config.train.device, info)
    check_compile(config.train, device)
    configure_tf32(device, config.train.tf32)
    check_loggers(config.log)
    resume = files.load_training_checkpoint(config.train.resume) if config.train.resume else None
    datasets = build_datasets(config)
    config = config.with_overrides(
        {
            "data.class_map": datasets.class_map.to_dict(),
            "num_classes": datasets.class_map.num_classes,
        }
    )
    class_names = list(datasets.class_map.names)
    if resume is not None:
        check_resume_matches(resume, config)
        if is_finished(resume, config):
            return finished_result(resume, config, class_names)
    seed_everything(config.train.seed + info.rank)
    model = prepare_model(config, model, datasets.class_map.num_classes).to(device)
    batches = TrainBatches(datasets.train, config, info, device)
    session = _build_session(config, model, datasets, batches, device, info)
    tracker = BestTracker()
    stopper = _early_stopping(config)
    start_epoch = 0 if resume is None else restore(session, tracker, stopper, resume, info)
    output_dir = Path(config.train.output_dir)
    run_logger = _start_outputs(config, output_dir, info, start_epoch)
    stopped = False
    try:
        for epoch in range(start_epoch, config.train.epochs):
            started = time.perf_counter()
            stats = train_one_epoch(session, batches.epoch(epoch), epoch, run_logger)
            stopped = _end_epoch(session, epoch, stats, datasets, tracker, stopper, run_logger,
                                 class_names, started)  # fmt: skip
            if stopped:
                logger.info("early stopping after epoch %d", epoch)
                break
    finally:
        if run_logger is not None:
            run_logger.close()
    return _final_result(session, datasets, output_dir, class_names, stopped)


def _wants_cuda(config: RunConfig) -> bool:
    requested = config.train.device
    if not torch.cuda.is_available():  # resolve_device reports a GPU asked for in vain
        return False
    if requested is None:
        return True
    try:
        return torch.device(requested).type == "cuda"
    except RuntimeError:  # not a device string: resolve_device reports it
        return False


def _early_stopping(config: RunConfig) -> EarlyStopping | None:
    train = config.train
    if not train.early_stopping:
        return None
    return EarlyStopping(
        train.early_stopping_patience, train.early_stopping_min_delta, train.early_stopping_use_ema
    )


def _build_session(
    config: RunConfig,
    model: RFDETR,
    datasets: Datasets,
    batches: TrainBatches,
    device: torch.device,
    info: DistInfo,
) -> TrainSession:
    train = config.train
    precision = resolve_precision(train, device)
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
    return TrainSession(
        config=config,
        model=model,
        forward_model=forward_model,
        criterion=build_criterion(config).to(device),
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, train, len(batches)),
        scaler=torch.amp.GradScaler(device.type, enabled=precision.needs_scaler),
        ema=ModelEMA(model, train.ema_decay, train.ema_tau) if train.use_ema else None,
        precision=precision,
        device=device,
        dist=info,
        sizes=list(datasets.train.sizes) if config.data.multi_scale else [],
    )


def _start_outputs(
    config: RunConfig, output_dir: Path, info: DistInfo, start_epoch: int
) -> RunLogger | None:
    if not info.is_main:
        return None
    output_dir.mkdir(parents=True, exist_ok=True)
    files.remove_stale_temporaries(output_dir)
    config.to_file(output_dir / CONFIG_FILE)
    resume_epoch = start_epoch - 1 if config.train.resume else None
    return RunLogger(output_dir, config.log, config.model_dump(mode="json"), resume_epoch)


def _end_epoch(
    session: TrainSession,
    epoch: int,
    stats: dict[str, float],
    datasets: Datasets,
    tracker: BestTracker,
    stopper: EarlyStopping | None,
    run_logger: RunLogger | None,
    class_names: list[str],
    started: float,
) -> bool:
    """Main process evaluates and writes; every process then learns whether to stop."""
    info = session.dist
    rng_states = _gather_rng_states(info, session.device)
    stop = False
    if info.is_main:
        outcome = finish_epoch(
            session, epoch, stats, valid=datasets.valid, tracker=tracker, stopper=stopper,
            run_logger=run_logger, rng_states=rng_states, class_names=class_names,
            started=started,
        )  # fmt: skip
        _plot(read_log(run_logger.log_path), Path(session.config.train.output_dir))
        stop = outcome.stop
    barrier(info)  # the others wait here until rank 0 has written this epoch's files
    return broadcast_bool(stop, info)


def _plot(records: list[dict[str, Any]], output_dir: Path) -> None:
    """``metrics_plot.png`` (loss, mAP regular vs EMA, lr per epoch), drawn by the evaluation
    package's plotting."""
    from rfdetr.evaluation.plots import plot_training_curves

    plot_training_curves(records, output_dir / PLOT_FILE)


def _gather_rng_states(info: DistInfo, device: torch.device) -> list[dict[str, Any]]:
    state = capture_rng_state(device)
    if not info.enabled:
        return [state]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, state)
    return gathered


def _final_result(
    session: TrainSession,
    datasets: Datasets,
    output_dir: Path,
    class_names: list[str],
    stopped: bool,
) -> TrainResult:
    best = output_dir / files.BEST_TOTAL
    if session.dist.is_main and best.is_file():
        summary = _summary(session, datasets, best, class_names, stopped)
        write_results(output_dir, summary)
    barrier(session.dist)  # nobody reads the best file before rank 0 has written it
    return TrainResult.from_run_dir(
        output_dir, class_names=class_names, stopped_early=stopped, model=session.model
    )


def _summary(
    session: TrainSession,
    datasets: Datasets,
    best: Path,
    class_names: list[str],
    stopped: bool,
) -> dict[str, Any]:
    """The content of ``results.json``; evaluates the best model on ``test/`` when present."""
    config = session.config
    checkpoint = files.read_checkpoint(best)
    metrics = checkpoint.metrics or {}
    test = None
    if datasets.test is not None:
        model, _, _ = files.load_model(checkpoint, config.model)
        result = evaluate(
            model.to(session.device).eval(),
            datasets.test,
            num_select=config.model.num_select,
            device=session.device,
            batch_size=config.eval.eval_batch_size or config.train.batch_size,
            num_workers=config.data.num_workers,
            segmentation=config.model.segmentation_head,
        )
        test = result.to_dict()
    return {
        "best_checkpoint": best.name,
        "best_source": metrics.get("source"),
        "best_epoch": metrics.get("epoch"),
        "map_50_95": metrics.get("map_50_95"),
        "map_50": metrics.get("map_50"),
        "valid": metrics.get("evaluation"),
        "test": test,
        "class_names": class_names,
        "class_map": config.data.class_map,
        "stopped_early": stopped,
    }
