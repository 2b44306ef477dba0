"""Exponential moving average of the model weights, with upstream's warm-up ramp: update ``n``
(1-based) uses the decay ``decay * (1 - exp(-n / tau))``."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn


class ModelEMA:
    """A frozen copy of a model whose weights follow the trained ones.

    ``model`` is the unwrapped trained module; ``tau`` 0 disables the ramp. ``module`` is the
    averaged model (eval mode, no gradients); ``updates`` counts :meth:`update` calls.
    """

    def __init__(self, model: nn.Module, decay: float, tau: float) -> None:
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.updates = 0

    def current_decay(self) -> float:
        if self.tau == 0:
            return self.decay
        return self.decay * (1.0 - math.exp(-(self.updates + 1) / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """``ema = d * ema + (1 - d) * model`` for float entries; integer entries are copied."""
        current = model.state_dict()
        pairs = [(ema, current[name]) for name, ema in self.module.state_dict().items()]
        averaged = [(ema, value) for ema, value in pairs if ema.is_floating_point()]
        if averaged:
            # lerp(ema, w, 1 - d) = ema + (1 - d)(w - ema) = d * ema + (1 - d) * w, one kernel.
            targets = [value.to(ema.dtype) for ema, value in averaged]
            torch._foreach_lerp_([ema for ema, _ in averaged], targets, 1.0 - self.current_decay())
        for ema, value in pairs:
            if not ema.is_floating_point():
                ema.copy_(value)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "module": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
            "updates": self.updates,
            "decay": self.decay,
            "tau": self.tau,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; decay and tau stay the configured ones."""
        self.module.load_state_dict(state["module"], strict=True)
        self.updates = int(state["updates"])
