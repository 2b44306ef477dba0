"""AdamW with upstream RF-DETR's parameter groups, and its learning-rate schedule.

- Encoder (``backbone.0.encoder.*``): ``lr_encoder * lr_vit_layer_decay ** (L + 1 - layer_id)
  * lr_component_decay ** 2`` with ``L = out_feature_indexes[-1] + 1``; embeddings have
  ``layer_id`` 0, block ``i`` has ``i + 1``, the rest (final norm) ``L + 1`` (factor 1). Weight
  decay is 0 for biases, norms, embeddings and position tables.
- Decoder (``transformer.decoder.*``): ``lr * lr_component_decay``.
- Everything else (projector, heads, queries, two-stage heads): ``lr``.

Parameters with equal settings share one group (few, large lists for the fused kernel).

The schedule is stepped once per optimizer step (upstream's managed presets): a linear warm-up
over ``warmup_epochs``, then either ``step`` (x0.1 after ``lr_drop`` epochs; with the defaults,
100 epochs and ``lr_drop=100``, a constant rate) or ``cosine`` (down to ``lr_min_factor`` of the
base rate at the last step).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rfdetr.config import ModelConfig, TrainConfig

logger = logging.getLogger(__name__)

ENCODER_PREFIX = "backbone.0.encoder"
DECODER_KEY = "transformer.decoder"
_NO_DECAY_KEYS = ("gamma", "pos_embed", "rel_pos", "bias", "norm", "embeddings")


def encoder_layer_id(name: str, num_layers: int) -> int:
    """Upstream's layer index of an encoder parameter: 0 embeddings, i + 1 block i, else L + 1."""
    if "embeddings" in name:
        return 0
    if ".layer." in name and ".residual." not in name:
        return int(name[name.find(".layer.") :].split(".")[2]) + 1
    return num_layers + 1


def param_groups(
    model: nn.Module, train: TrainConfig, model_config: ModelConfig
) -> list[dict[str, Any]]:
    """Optimizer groups ``{"params", "lr", "weight_decay", "name"}`` for the unwrapped ``model``."""
    num_layers = model_config.out_feature_indexes[-1] + 1
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        lr, weight_decay, kind = train.lr, train.weight_decay, "other"
        if name.startswith(ENCODER_PREFIX):
            exponent = num_layers + 1 - encoder_layer_id(name, num_layers)
            lr = train.lr_encoder * train.lr_vit_layer_decay**exponent
            lr *= train.lr_component_decay**2
            if any(key in name for key in _NO_DECAY_KEYS):
                weight_decay = 0.0
            kind = f"encoder layer {num_layers + 1 - exponent}"
        elif DECODER_KEY in name:
            lr, kind = train.lr * train.lr_component_decay, "decoder"
        empty = {"params": [], "lr": lr, "weight_decay": weight_decay, "name": kind}
        groups.setdefault((lr, weight_decay), empty)["params"].append(parameter)
    return list(groups.values())


def build_optimizer(
    model: nn.Module, train: TrainConfig, model_config: ModelConfig, device: torch.device
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; the fused kernel on CUDA and CPU, foreach elsewhere."""
    groups = param_groups(model, train, model_config)
    fused = device.type in ("cuda", "cpu")
    optimizer = torch.optim.AdamW(
        groups, lr=train.lr, weight_decay=train.weight_decay, fused=fused, foreach=not fused
    )
    logger.debug("optimizer: %d parameter groups", len(groups))
    return optimizer


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
