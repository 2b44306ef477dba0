"""Training: :func:`fit` runs a `RunConfig`; ``model.train(...)`` and ``rfdetr train`` call it."""

from __future__ import annotations

from rfdetr.utils.lazy import lazy_names

_LAZY: dict[str, str] = {"fit": "loop", "TrainResult": "loop", "NonFiniteLossError": "step"}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
