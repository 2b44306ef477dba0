"""Training: :func:`fit` runs a `RunConfig`; ``model.train(...)`` and ``rfdetr train`` call it.

- :mod:`loop`: :func:`fit`, the driver; :mod:`step`: one optimizer step with accumulation.
- :mod:`optim`, :mod:`schedule`, :mod:`ema`, :mod:`early_stopping`: the recipe.
- :mod:`outputs`: what happens after each epoch (files: :mod:`rfdetr.checkpoints`);
  :mod:`loggers`: reports (``metrics_plot.png`` comes from :mod:`rfdetr.evaluation.plots`).
- :mod:`distributed`: ``torchrun`` (DDP) support; :mod:`runtime`: device, precision, RNG.
"""

from __future__ import annotations

from rfdetr.utils.lazy import lazy_names

_LAZY: dict[str, str] = {
    "fit": "loop",
    "TrainResult": "loop",
    "NonFiniteLossError": "step",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
