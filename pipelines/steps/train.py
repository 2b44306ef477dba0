"""Train one run of the pipeline (the ``train`` step).

A retried step resumes: from ``checkpoint.pth`` already in its output folder (the local runner
reuses the folder), else from the object-store mirror of the previous attempt
(:mod:`pipelines.steps.mirror`; a new pod starts with an empty folder).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.steps.common import StepError, plain_number, step_metrics
from pipelines.steps.config import read_run_config
from pipelines.steps.mirror import DEFAULT_INTERVAL_S, LOG_FILE, CheckpointMirror

if TYPE_CHECKING:
    from rfdetr.config import RunConfig
    from rfdetr.telemetry import StepMetrics
from rfdetr.storage import download_file, is_object_uri, parse_uri

logger = logging.getLogger(__name__)


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
            value = plain_number(self.best.get(key))
            if value is not None:
                out[f"best_{key}"] = value
        for key, value in self.last_epoch.items():
            out[f"last_{key}"] = value
        return out


def mirror_folder(run_id: str) -> str:
    """A key segment for the run: its id, else a fresh random one (no retry can find it)."""
    import uuid

    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", run_id).strip(".-")
    return cleaned or f"run-{uuid.uuid4().hex[:12]}"


def _pretrained(weights: str | None, scratch: Path) -> str | None:
    """A local file for ``pretrain_weights`` given as an object URI (downloaded, verified)."""
    if not weights or not is_object_uri(weights):
        return weights
    target = parse_uri(weights)
    local = scratch / target.name
    download_file(target, local)
    logger.info("pretrained weights %s -> %s", weights, local)
    return str(local)


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
    mirror_interval: float = DEFAULT_INTERVAL_S,
    run_id: str = "",
    processes: int | None = None,
) -> TrainOutcome:
    """Train as the run config says, on ``dataset_dir``, writing the run folder ``output_dir``.

    Args:
        run_config: the ``resolve_config`` step's JSON.
        dataset_dir: the fetched, validated dataset.
        output_dir: the run folder (``checkpoint*.pth``, ``log.txt``, ``results.json``, ...).
        mirror_root: object-store prefix under which the resume files are mirrored while
            training, as ``<mirror_root>/<run_id>/train/`` (stable across retries of the step);
            empty: no mirror.
        mirror_interval: seconds between mirror syncs.
        run_id: the pipeline run (the mirror's folder; telemetry).
        processes: training processes; None: one per visible CUDA device. More than one runs
            DDP under ``torch.distributed.run`` (gloo on the CPU, NCCL on GPUs).

    Raises:
        ConfigError, DatasetError, CheckpointError, NonFiniteLossError: from training.
        StepError: a distributed run failed (its last output lines are in the message).
        StorageError: the mirror or the pretrained weights could not be read.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = read_run_config(run_config)
    mirror = None
    if mirror_root:
        uri = f"{mirror_root.rstrip('/')}/{mirror_folder(run_id)}/train"
        mirror = CheckpointMirror(uri, mirror_interval)
    with step_metrics("train", run_id) as metrics, tempfile.TemporaryDirectory() as tmp:
        if mirror is not None:
            mirror.restore(out)
        config, resumed = _prepared(config, dataset_dir, out, Path(tmp))
        count = processes or visible_gpus()
        with mirror.watching(out) if mirror is not None else contextlib.nullcontext():
            if count > 1:
                run_distributed(config, count, Path(tmp))
            else:
                from rfdetr.training.loop import fit

                fit(config)
        if mirror is not None:
            mirror.clear()
        outcome = outcome_from_folder(out, resumed)
        _record(metrics, outcome)
    return outcome


def _prepared(
    config: RunConfig, dataset_dir: str | Path, out: Path, scratch: Path
) -> tuple[RunConfig, int | None]:
    """The config pointed at the data, the run folder, its resume point and local weights."""
    overrides: dict[str, Any] = {"dataset_dir": str(dataset_dir), "output_dir": str(out)}
    resumed = None
    last = out / "checkpoint.pth"
    if last.is_file():
        overrides["resume"] = str(last)
        resumed = _logged_epoch(out)
        logger.info("resuming from %s (epoch %s finished)", last, resumed)
    overrides["pretrain_weights"] = _pretrained(config.train.pretrain_weights, scratch)
    return config.with_overrides(overrides), resumed


def visible_gpus() -> int:
    """CUDA devices this process sees (at least 1: the CPU counts as one process)."""
    import torch

    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


def run_distributed(config: RunConfig, processes: int, scratch: Path) -> None:
    """``torch.distributed.run --standalone`` with ``processes`` workers of ``rfdetr train``.

    Output streams through to this process's (the step's log); rank 0 writes the run folder.
    """
    path = config.to_file(scratch / "run.json")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "-m",
        "rfdetr",
        "train",
        "--config",
        str(path),
    ]
    logger.info("training with %d processes: %s", processes, " ".join(command))
    tail: collections.deque[str] = collections.deque(maxlen=15)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            tail.append(line.rstrip())
        code = proc.wait()
    if code != 0:
        errors = [line for line in tail if "rfdetr train:" in line] or list(tail)[-5:]
        raise StepError(f"distributed training failed (exit {code}): {' | '.join(errors)}")


def outcome_from_folder(out: Path, resumed: int | None) -> TrainOutcome:
    """What the run folder says about the finished run (``results.json``, ``log.txt`` and the
    best checkpoint's metrics), the same whichever process wrote it."""
    import torch

    from rfdetr.training import checkpoint as files
    from rfdetr.training.loggers import read_log

    best_file = out / files.BEST_TOTAL
    if not best_file.is_file():
        raise StepError(f"{out}: training finished no epoch; nothing to select")
    state = torch.load(best_file, map_location="cpu", weights_only=True)
    history = read_log(out / LOG_FILE)
    results_file = out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    return TrainOutcome(
        epochs_completed=int(history[-1]["epoch"]) + 1 if history else 0,
        resumed_from_epoch=resumed,
        stopped_early=bool(results.get("stopped_early", False)),
        class_names=list(state.get("class_names") or results.get("class_names") or []),
        best={k: v for k, v in (state.get("metrics") or {}).items() if k != "evaluation"},
        last_epoch=_last_record(history),
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


def _logged_epoch(run_dir: Path) -> int | None:
    """The last epoch ``log.txt`` records (the resume point's epoch), or None."""
    from rfdetr.training.loggers import read_log

    records = read_log(run_dir / LOG_FILE)
    return int(records[-1]["epoch"]) if records else None
