"""Training: :func:`fit` runs a `RunConfig`; ``model.train(...)`` and ``rfdetr train`` call it.

- :mod:`loop`: :func:`fit`, the driver; :mod:`step`: one optimizer step with accumulation.
- :mod:`optim`, :mod:`schedule`, :mod:`ema`, :mod:`early_stopping`: the recipe.
- :mod:`outputs`: what happens after each epoch (files: :mod:`rfdetr.checkpoints`);
  :mod:`loggers`: reports (``metrics_plot.png`` comes from :mod:`rfdetr.evaluation.plots`).
- :mod:`distributed`: ``torchrun`` (DDP) support; :mod:`runtime`: device, precision, RNG.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "fit": "loop",
    "TrainResult": "loop",
    "NonFiniteLossError": "step",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rfdetr.training' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"rfdetr.training.{module}"), name)
    globals()[name] = value
    return value
