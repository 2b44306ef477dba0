"""Train one run of the pipeline (the ``train`` step) in ``<output>.work``; the artifact gets only
:data:`KEPT`, the resume files stay in the mirror (:mod:`pipelines.steps.mirror`). A retried step
resumes from the work folder's ``checkpoint.pth`` (local runner), else from the mirror's.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pipelines.steps.common import StepError, plain_number, step_metrics
from pipelines.steps.dataset import dataset_folder
from pipelines.steps.mirror import CheckpointMirror
from pipelines.steps.weights import resolve_weights
from pipelines.telemetry import StepMetrics
from rfdetr import checkpoints as files
from rfdetr.config import RunConfig
from rfdetr.training.loggers import LOG_FILE, read_log
from rfdetr.utils.atomic import link_or_copy

logger = logging.getLogger(__name__)

# What the output artifact holds: what select_checkpoint reads, and the run's record.
KEPT: tuple[str, ...] = (
    files.BEST_REGULAR,
    files.BEST_EMA,
    LOG_FILE,
    "results.json",
    "run.yaml",
    "metrics_plot.png",
)


@dataclass(frozen=True)
class TrainOutcome:
    """The numbers a finished training run reports (plain data for artifact metadata)."""

    epochs_completed: int
    resumed_from_epoch: int | None
    stopped_early: bool
    class_names: list[str]
    best: dict[str, Any]
    last_epoch: dict[str, float] = field(default_factory=dict)

    def model_metadata(self) -> dict[str, Any]:
        """Metadata of the run-folder ``Model`` artifact (``resumed_from_epoch`` -1: fresh)."""
        return {
            "framework": "pytorch",
            "epochs_completed": self.epochs_completed,
            "class_names": list(self.class_names),
            "resumed_from_epoch": -1
            if self.resumed_from_epoch is None
            else self.resumed_from_epoch,
        }

    def metrics(self) -> dict[str, float]:
        """Flat figures for a ``Metrics`` artifact."""
        out = {
            "epochs_completed": float(self.epochs_completed),
            "stopped_early": float(self.stopped_early),
        }
        for key in ("map_50_95", "map_50", "epoch"):
            if (value := plain_number(self.best.get(key))) is not None:
                out[f"best_{key}"] = value
        return out | {f"last_{key}": value for key, value in self.last_epoch.items()}


def check_run_id(run_id: str) -> str:
    """``run_id``, unless it is an unresolved placeholder: a KFP backend before 2.5 passes
    ``{{$.pipeline_job_uuid}}`` literally, and every run would then share one mirror folder."""
    if "{{" in run_id:
        raise StepError(
            f"run_id {run_id!r} is an unresolved KFP placeholder: the KFP backend is too old "
            "for this pipeline (it needs 2.15 or later)"
        )
    return run_id


def work_folder(output_dir: str | Path) -> Path:
    """The run folder training writes: ``<output>.work``, next to the artifact (same file
    system, so the kept files are hard-linked, and kept across local retries)."""
    out = Path(output_dir)
    return out.with_name(f"{out.name}.work")


def keep_outputs(work: Path, out: Path) -> None:
    """Link the :data:`KEPT` files (and TensorBoard's) of the run folder into the artifact."""
    out.mkdir(parents=True, exist_ok=True)
    kept = [name for name in KEPT if (work / name).is_file()]
    kept += sorted(p.name for p in work.glob("events.out.tfevents.*") if p.is_file())
    for name in kept:
        link_or_copy(work / name, out / name)


def _last_record(history: list[dict[str, Any]]) -> dict[str, float]:
    if not history:
        return {}
    wanted = (
        "train_loss",
        "val_map_50_95",
        "val_ema_map_50_95",
        "epoch_time_s",
        "train_images_per_s",
    )
    record = history[-1]
    terms = sorted(k for k in record if k.startswith("train_loss_"))  # loss_ce, loss_bbox, ...
    return {
        k: float(record[k]) for k in (*wanted, *terms) if plain_number(record.get(k)) is not None
    }


def train_run(
    run_config: str | Path,
    dataset_dir: str | Path,
    output_dir: str | Path,
    *,
    mirror_root: str = "",
    run_id: str = "",
    processes: int | None = None,
) -> TrainOutcome:
    """Train as the ``resolve_config`` step's JSON says, on the fetched dataset; the artifact
    ``output_dir`` gets :data:`KEPT`, the run folder is :func:`work_folder`.

    Args:
        mirror_root: object-store prefix of the resume files' mirror
            (:meth:`CheckpointMirror.of_run`); empty: none, they stay in the work folder only.
        processes: training processes; None: one per visible CUDA device. More than one runs
            DDP under ``torch.distributed.run`` (gloo on the CPU, NCCL on GPUs).

    Raises:
        ConfigError, DatasetError, CheckpointError, NonFiniteLossError: from training.
        StepError: a distributed run failed (its last output lines are in the message).
        StorageError: the mirror or the pretrained weights could not be read.
    """
    work = work_folder(output_dir)
    work.mkdir(parents=True, exist_ok=True)
    config = RunConfig.from_file(run_config)
    mirror = CheckpointMirror.of_run(mirror_root, run_id) if mirror_root else None
    with step_metrics("train", run_id) as metrics, tempfile.TemporaryDirectory() as tmp:
        with training(config, dataset_dir, work, Path(tmp), mirror) as (config, resumed):
            count = processes or (torch.cuda.device_count() if torch.cuda.is_available() else 1)
            if count > 1:
                run_distributed(config, count, Path(tmp))
            else:
                from rfdetr.training.loop import fit

                fit(config)
        outcome = outcome_from_folder(work, resumed)
        if mirror is not None:
            mirror.finish(work)
        keep_outputs(work, Path(output_dir))
        _record(metrics, outcome)
    return outcome


@contextlib.contextmanager
def training(
    config: RunConfig,
    dataset_dir: str | Path,
    work: Path,
    scratch: Path,
    mirror: CheckpointMirror | None,
    watch: bool = True,
) -> Iterator[tuple[RunConfig, int | None]]:
    """``config`` pointed at the local dataset, the run folder ``work`` (resume point restored
    from ``mirror``, which syncs while ``watch``) and weights fetched into ``scratch``; with the
    epoch the resume point finished."""
    # the weights first: a missing mirror fails before the dataset is downloaded
    weights = resolve_weights(config.train.pretrain_weights, scratch)
    with dataset_folder(dataset_dir) as data:
        if mirror is not None:
            mirror.restore(work)
        overrides: dict[str, Any] = {"dataset_dir": str(data), "output_dir": str(work)}
        resumed = None
        last = work / files.LAST
        if last.is_file():
            overrides["resume"] = str(last)
            records = read_log(work / LOG_FILE)  # its last epoch is the resume point's
            resumed = int(records[-1]["epoch"]) if records else None
            logger.info("resuming from %s (epoch %s finished)", last, resumed)
        config = config.with_overrides(overrides, pretrain_weights=weights)
        with mirror.watching(work) if mirror and watch else contextlib.nullcontext():
            yield config, resumed


def run_distributed(
    config: RunConfig, processes: int, scratch: Path, launcher: tuple[str, ...] | None = None
) -> None:
    """``torch.distributed.run --standalone`` with ``processes`` workers of ``rfdetr train``
    (``launcher``: other options, e.g. none on a multi-node job's node); output streams through
    to the step's log."""
    path = config.to_file(scratch / "run.json")
    if launcher is None:
        launcher = ("--standalone", f"--nproc_per_node={processes}")
    train = ("-m", "rfdetr", "train", "--config", str(path))
    command = [sys.executable, "-m", "torch.distributed.run", *launcher, *train]
    logger.info("training with %d processes: %s", processes, " ".join(command))
    tail: collections.deque[str] = collections.deque(maxlen=15)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                sys.stdout.write(line)
                tail.append(line.rstrip())
        except BaseException:  # SIGTERM (see mirror.watching) or a crash: stop the workers
            proc.terminate()
            raise
        code = proc.wait()
    if code != 0:
        errors = [line for line in tail if "rfdetr train:" in line] or list(tail)[-5:]
        raise StepError(f"distributed training failed (exit {code}): {' | '.join(errors)}")


def outcome_from_folder(out: Path, resumed: int | None) -> TrainOutcome:
    """What the run folder says about the finished run, the same whichever process wrote it."""
    from rfdetr.training.outputs import TrainResult

    if not (out / files.BEST_TOTAL).is_file():
        raise StepError(f"{out}: training finished no epoch; nothing to select")
    result = TrainResult.from_run_dir(out)
    return TrainOutcome(
        epochs_completed=result.epochs_completed,
        resumed_from_epoch=resumed,
        stopped_early=result.stopped_early,
        class_names=result.class_names,
        best={k: v for k, v in (result.best_metrics or {}).items() if k != "evaluation"},
        last_epoch=_last_record(result.history),
    )


def _record(metrics: StepMetrics, outcome: TrainOutcome) -> None:
    metrics.set_epoch(outcome.epochs_completed)
    if "train_images_per_s" in outcome.last_epoch:
        metrics.set_images_per_second(outcome.last_epoch["train_images_per_s"])
    losses = {
        k[len("train_") :]: v for k, v in outcome.last_epoch.items() if k.startswith("train_loss")
    }
    metrics.set_losses(losses or {"loss": float("nan")})  # the total and every term
    best = {k: plain_number(outcome.best.get(k)) for k in ("map_50_95", "map_50")}
    metrics.set_map({k: v for k, v in best.items() if v is not None})
