"""Training: :func:`fit` runs a `RunConfig`; ``model.train(...)`` and ``rfdetr train`` call it.

- :mod:`loop`: :func:`fit`, the driver; :mod:`step`: one optimizer step with accumulation.
- :mod:`optim`, :mod:`schedule`, :mod:`ema`, :mod:`early_stopping`: the recipe.
- :mod:`checkpoint`: the checkpoint files (save, strip, select_best); :mod:`outputs`: what
  happens after each epoch; :mod:`loggers`: reports (``metrics_plot.png`` comes from
  :mod:`rfdetr.evaluation.plots`).
- :mod:`distributed`: ``torchrun`` (DDP) support; :mod:`runtime`: device, precision, RNG.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "fit": "loop",
    "TrainResult": "loop",
    "NonFiniteLossError": "step",
    "select_best": "checkpoint",
    "strip_checkpoint": "checkpoint",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rfdetr.training' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"rfdetr.training.{module}"), name)
    globals()[name] = value
    return value
