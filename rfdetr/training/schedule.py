"""Learning-rate schedule, stepped once per optimizer step (upstream's managed presets).

A linear warm-up over ``warmup_epochs``, then either ``step`` (x0.1 after ``lr_drop`` epochs;
with the defaults, 100 epochs and ``lr_drop=100``, a constant rate) or ``cosine`` (down to
``lr_min_factor`` of the base rate at the last step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rfdetr.config import TrainConfig


@dataclass
class LRSchedule:
    """The multiplier of every group's base rate at 0-based optimizer step ``step``; plain
    attributes, so ``LambdaLR.state_dict()`` stores it as data."""

    kind: str
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    lr_drop: int
    min_factor: float

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / max(1, self.warmup_steps)
        if self.kind == "cosine":
            progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
            progress = min(progress, 1.0)
            return self.min_factor + (1 - self.min_factor) * 0.5 * (
                1 + math.cos(math.pi * progress)
            )
        return 1.0 if step < self.lr_drop * self.steps_per_epoch else 0.1


def build_scheduler(
    optimizer: torch.optim.Optimizer, train: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` over :class:`LRSchedule`: ``train.epochs`` epochs of ``steps_per_epoch``."""
    schedule = LRSchedule(
        kind=train.lr_scheduler,
        steps_per_epoch=steps_per_epoch,
        total_steps=steps_per_epoch * train.epochs,
        warmup_steps=int(steps_per_epoch * train.warmup_epochs),
        lr_drop=train.lr_drop,
        min_factor=train.lr_min_factor,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=schedule)
