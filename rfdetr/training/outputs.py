"""After each training epoch (main process only): evaluate, track the best models, write files.

Write order: best files, the ``log.txt`` line, then ``checkpoint.pth`` last, so that the resume
point of a run killed at any moment never claims an epoch whose outputs are missing.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from rfdetr import checkpoints as files
from rfdetr.data.dataset import DetectionDataset
from rfdetr.models.detector import RFDETR
from rfdetr.models.postprocess import PostProcess
from rfdetr.training.loggers import LOG_FILE, read_log
from rfdetr.training.runtime import capture_rng_state, restore_rng_state
from rfdetr.training.step import TrainSession
from rfdetr.utils.atomic import write_atomic

if TYPE_CHECKING:
    from rfdetr.evaluation.coco import EvaluationResult

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"


@dataclass
class TrainResult:
    """What a run produced.

    Attributes:
        best_checkpoint: ``checkpoint_best_total.pth`` (None if no epoch finished).
        best_metrics: metrics stored in it (``map_50_95``, ``source``, ``epoch``, ...).
        epochs_completed: epochs finished in total (including before a resume).
        already_finished: ``resume`` pointed at a run with nothing left to train.
        history: the ``log.txt`` records.
        model: the trained (last-epoch) model; None when nothing was trained.
    """

    output_dir: Path
    best_checkpoint: Path | None
    best_metrics: dict[str, Any] | None
    class_names: list[str]
    epochs_completed: int
    stopped_early: bool = False
    already_finished: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    model: RFDETR | None = None

    @classmethod
    def from_run_dir(cls, output_dir: str | Path, **known: Any) -> TrainResult:
        """What a run folder's files say; ``known`` fields (e.g. ``class_names``) win.

        Raises:
            CheckpointError: the best checkpoint cannot be read.
        """
        out = Path(output_dir)
        best = out / files.BEST_TOTAL
        checkpoint = files.read_checkpoint(best) if best.is_file() else None
        results_file = out / RESULTS_FILE
        results = json.loads(results_file.read_text()) if results_file.is_file() else {}
        history = read_log(out / LOG_FILE)
        names = (checkpoint.class_names if checkpoint else None) or results.get("class_names")
        found = {
            "output_dir": out,
            "best_checkpoint": best if checkpoint is not None else None,
            "best_metrics": checkpoint.metrics if checkpoint is not None else None,
            "class_names": list(names or []),
            "epochs_completed": int(history[-1]["epoch"]) + 1 if history else 0,
            "stopped_early": bool(results.get("stopped_early", False)),
            "history": history,
        }
        return cls(**{**found, **known})


def finish_epoch(
    session: TrainSession,
    epoch: int,
    train_stats: dict[str, float],
    rng_states: list[dict[str, Any]],
    started: float,
) -> bool:
    """Evaluate, write the best files, log and ``checkpoint.pth``; whether early stopping ends
    the run."""
    config, tracker = session.config, session.tracker
    out = Path(config.train.output_dir)
    models = {"regular": session.model} | ({"ema": session.ema.module} if session.ema else {})
    found = evaluate_split_models(session, list(models.values()), session.valid)
    results = dict(zip(models, found, strict=True))
    record: dict[str, Any] = {"epoch": epoch}
    record |= {("lr" if k == "lr" else f"train_{k}"): v for k, v in train_stats.items()}
    for source, result in results.items():  # log.txt keys: val_map_50_95, val_ema_segm_map_50...
        prefix = "val_" if source == "regular" else "val_ema_"
        record |= {f"{prefix}{key}": value for key, value in result.bbox.to_dict().items()}
        if result.segm is not None:
            record |= {f"{prefix}segm_{k}": v for k, v in result.segm.to_dict().items()}
    # Best-file selection and early stopping compare the primary mAP50:95.
    scores = {source: float(result.primary.map_50_95) for source, result in results.items()}
    for source in [s for s, score in scores.items() if tracker.improve(s, score, epoch)]:
        _write_best(session, source, results[source], epoch)
    stopper = session.stopper
    stop = stopper is not None and stopper.update(scores.get("regular"), scores.get("ema"))
    record["epoch_time_s"] = time.perf_counter() - started
    record["n_parameters"] = sum(p.numel() for p in session.model.parameters())
    if session.run_logger is not None:
        session.run_logger.epoch(record)
    state = {**training_state(session, epoch, rng_states, record), "stopped_early": stop}
    files.save_training_checkpoint(out / files.LAST, state)
    if (epoch + 1) % config.train.checkpoint_interval == 0:
        files.save_training_checkpoint(out / files.periodic_name(epoch), state)
    return stop


def evaluate_split_models(
    session: TrainSession, models: list[nn.Module], dataset: DetectionDataset | None
) -> list[EvaluationResult]:
    """COCO metrics of each of ``models`` on ``dataset`` in one pass.

    The models' modes (by :func:`~rfdetr.evaluation.coco.evaluate_models`) and the training
    random streams are restored afterwards: a resumed run restores the streams saved after the
    epoch, which must equal those of an uninterrupted run.
    """
    from rfdetr.evaluation.coco import evaluate_models

    config = session.config
    streams = capture_rng_state(session.device)
    try:
        return evaluate_models(
            models,
            dataset,
            postprocess=PostProcess(config.model.num_select),
            device=session.device,
            batch_size=config.eval.eval_batch_size or config.train.batch_size,
            num_workers=config.data.num_workers,
            segmentation=config.model.segmentation_head,
        )
    finally:
        restore_rng_state(streams, session.device)


def _write_best(session: TrainSession, source: str, result: Any, epoch: int) -> None:
    out = Path(session.config.train.output_dir)
    module = session.ema.module if source == "ema" and session.ema else session.model
    weights = module.state_dict()
    metrics = {  # the selection score first, then the full result
        "source": source,
        "epoch": epoch,
        "iou_type": "segm" if result.segm is not None else "bbox",
        "map_50_95": float(result.primary.map_50_95),
        "map_50": float(result.primary.map_50),
        "evaluation": result.to_dict(),
    }
    name = files.BEST_EMA if source == "ema" else files.BEST_REGULAR
    config, names = session.config.model_dump(mode="json"), session.class_names
    files.save_checkpoint(
        out / name, weights, config=config, class_names=names, epoch=epoch, metrics=metrics
    )
    if session.tracker.winner() == source:  # the same bytes: written once
        files.link_checkpoint(out / name, out / files.BEST_TOTAL)
        session.tracker.total = source
        logger.info(
            "epoch %d: new best %s model, mAP50:95 %.4f -> %s",
            epoch,
            source,
            metrics["map_50_95"],
            files.BEST_TOTAL,
        )


def training_state(
    session: TrainSession, epoch: int, rng_states: list[dict[str, Any]], metrics: dict[str, Any]
) -> dict[str, Any]:
    return {
        "model": {k: v.detach().cpu() for k, v in session.model.state_dict().items()},
        "ema": session.ema.state_dict() if session.ema is not None else None,
        "optimizer": session.optimizer.state_dict(),
        "scheduler": session.scheduler.state_dict(),
        "scaler": session.scaler.state_dict() if session.scaler.is_enabled() else None,
        "epoch": epoch,
        "global_step": session.global_step,
        "rng": rng_states,
        "trackers": {
            "best": asdict(session.tracker),
            "early_stopping": asdict(session.stopper) if session.stopper else None,
        },
        "config": session.config.model_dump(mode="json"),
        "class_names": session.class_names,
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))},
    }


def write_results(out: Path, summary: dict[str, Any]) -> Path:
    return write_atomic(out / RESULTS_FILE, json.dumps(summary, indent=2).encode())
