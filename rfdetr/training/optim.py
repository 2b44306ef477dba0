"""AdamW with upstream RF-DETR's parameter groups.

- Encoder (``backbone.0.encoder.*``): ``lr_encoder * lr_vit_layer_decay ** (L + 1 - layer_id)
  * lr_component_decay ** 2`` with ``L = out_feature_indexes[-1] + 1``; embeddings have
  ``layer_id`` 0, block ``i`` has ``i + 1``, the rest (final norm) ``L + 1`` (factor 1). Weight
  decay is 0 for biases, norms, embeddings and position tables.
- Decoder (``transformer.decoder.*``): ``lr * lr_component_decay``.
- Everything else (projector, heads, queries, two-stage heads): ``lr``.

Parameters with equal settings share one group (few, large lists for the fused kernel).
"""

from __future__ import annotations

import logging
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
    settings: dict[tuple[float, float], list[nn.Parameter]] = {}
    names: dict[tuple[float, float], str] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if name.startswith(ENCODER_PREFIX):
            exponent = num_layers + 1 - encoder_layer_id(name, num_layers)
            lr = train.lr_encoder * train.lr_vit_layer_decay**exponent
            lr *= train.lr_component_decay**2
            no_decay = any(key in name for key in _NO_DECAY_KEYS)
            weight_decay = 0.0 if no_decay else train.weight_decay
            kind = f"encoder layer {num_layers + 1 - exponent}"
        elif DECODER_KEY in name:
            lr, weight_decay, kind = (
                train.lr * train.lr_component_decay,
                train.weight_decay,
                "decoder",
            )
        else:
            lr, weight_decay, kind = train.lr, train.weight_decay, "other"
        key = (lr, weight_decay)
        settings.setdefault(key, []).append(parameter)
        names.setdefault(key, kind)
    return [
        {"params": params, "lr": lr, "weight_decay": wd, "name": names[(lr, wd)]}
        for (lr, wd), params in settings.items()
    ]


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
