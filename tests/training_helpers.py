"""Helpers shared by the training tests (tests/training, tests/multinode): a module, not a
conftest, so tests can import it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rfdetr.config import RunConfig
from rfdetr.models.build import build_model
from rfdetr.training.distributed import DistInfo
from rfdetr.training.ema import ModelEMA
from rfdetr.training.optim import build_optimizer, build_scheduler
from rfdetr.training.runtime import Precision
from rfdetr.training.setup import build_criterion
from rfdetr.training.step import TrainSession

# A 2-epoch CPU run of the `tiny` preset that takes seconds (with a dataset and an output dir).
TINY_RUN: dict[str, Any] = {
    "epochs": 2,
    "batch_size": 2,
    "grad_accum_steps": 1,
    "num_workers": 0,
    "multi_scale": False,
    "checkpoint_interval": 1,
    "device": "cpu",
    "tensorboard": False,
    "progress_bar": False,
}


def tiny_options(dataset: Path, output_dir: Path, **overrides: Any) -> dict[str, Any]:
    """Keyword options of a :data:`TINY_RUN` on ``dataset``, writing to ``output_dir``."""
    return {"dataset_dir": str(dataset), "output_dir": str(output_dir), **TINY_RUN, **overrides}


def tiny_session(scaled: bool = False, **overrides: Any) -> TrainSession:
    """A CPU `TrainSession` of the `tiny` preset (3 classes, batch 2, seeded weights);
    ``scaled``: a CPU ``GradScaler`` (fp16 skip logic) is enabled."""
    config = RunConfig.from_kwargs(
        "tiny", dataset_dir="-", num_classes=3, batch_size=2, grad_accum_steps=1, epochs=2
    )
    torch.manual_seed(0)
    model = build_model(config.model).train()
    optimizer = build_optimizer(model, config.train, config.model, torch.device("cpu"))
    return TrainSession(
        config=config,
        model=model,
        forward_model=model,
        criterion=build_criterion(config).train(),
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, config.train, steps_per_epoch=10),
        scaler=torch.amp.GradScaler("cpu", init_scale=2.0**16, enabled=scaled),
        ema=ModelEMA(model, config.train.ema_decay, config.train.ema_tau),
        precision=Precision("cpu"),
        device=torch.device("cpu"),
        dist=DistInfo(),
        **overrides,
    )
