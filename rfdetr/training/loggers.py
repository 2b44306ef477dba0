"""Where training reports go: ``log.txt`` (a JSON line per epoch), TensorBoard, Weights &
Biases and a tqdm progress bar."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

from rfdetr.config import LogConfig
from rfdetr.errors import UserError

logger = logging.getLogger(__name__)

LOG_FILE = "log.txt"


class LoggerUnavailableError(UserError, RuntimeError):
    """A logger was asked for but its package is not installed."""


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def check_loggers(log: LogConfig) -> None:
    """Fail at once, before any training, when a requested logger is not installed."""
    for name in ("tensorboard", "wandb"):
        if getattr(log, name) and not _installed(name):
            raise LoggerUnavailableError(
                f"{name}=True but the '{name}' package is not installed; "
                f"pip install 'rfdetr[logging]' or pass {name}=False"
            )


class RunLogger:
    """Per-step and per-epoch metrics to every configured sink (main process only).

    ``config`` (plain data) is sent to W&B. On resume, lines of ``log.txt`` after
    ``resume_epoch`` (the last completed epoch) are dropped: one line per epoch.
    """

    def __init__(
        self,
        output_dir: Path,
        log: LogConfig,
        config: dict[str, Any],
        resume_epoch: int | None = None,
    ) -> None:
        self.log_path = output_dir / LOG_FILE
        records = [] if resume_epoch is None else read_log(self.log_path)
        kept = [r for r in records if int(r.get("epoch", -1)) <= (resume_epoch or 0)]
        self.log_path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self.tensorboard = None
        if log.tensorboard or (log.tensorboard is None and _installed("tensorboard")):
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(log_dir=str(output_dir))
        elif log.tensorboard is None:
            logger.info("TensorBoard logging off: the 'tensorboard' package is not installed")
        self.wandb = None
        if log.wandb:
            import wandb

            self.wandb = wandb.init(
                project=log.project, name=log.run, config=config, dir=str(output_dir)
            )

    def step(self, global_step: int, values: dict[str, float]) -> None:
        """Per-optimizer-step values to TensorBoard, as ``train_step/<key>``: one tag must not
        mix the x axes of steps and epochs (``train/<key>``)."""
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(f"train_step/{key}", value, global_step)

    def epoch(self, record: dict[str, Any]) -> None:
        """One epoch's record: a ``log.txt`` line, TensorBoard scalars, a W&B log call."""
        with self.log_path.open("a") as handle:
            handle.write(json.dumps(_json_safe(record)) + "\n")
        epoch = int(record["epoch"])
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "epoch"}
        if self.tensorboard is not None:
            for key, value in scalars.items():
                self.tensorboard.add_scalar(_tag(key), value, epoch)
            self.tensorboard.flush()
        if self.wandb is not None:
            self.wandb.log({_tag(k): v for k, v in scalars.items()} | {"epoch": epoch})

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


def _tag(key: str) -> str:
    # train_loss -> train/loss, val_ema_map_50 -> val_ema/map_50
    for prefix in ("train_", "val_ema_", "val_", "test_"):
        if key.startswith(prefix):
            return f"{prefix[:-1]}/{key[len(prefix) :]}"
    return key


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def read_log(path: Path) -> list[dict[str, Any]]:
    """The epoch records of a ``log.txt``."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def progress_bar(total: int, description: str, enabled: bool | None) -> Any:
    """A tqdm bar, drawn when ``enabled`` (None: when stdout is a terminal)."""
    from tqdm import tqdm

    show = sys.stdout.isatty() if enabled is None else enabled
    return tqdm(total=total, desc=description, leave=False, dynamic_ncols=True, disable=not show)
