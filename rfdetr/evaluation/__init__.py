"""Evaluation: COCO metrics with named fields, per-class results, reports and plots.

- :func:`evaluate_model` -> :class:`EvaluationResult` (``bbox``, ``segm``, ``per_class``, the
  confidence threshold maximising macro F1, the confusion matrix): the training loop's evaluator.
- :func:`evaluate`: a model or checkpoint on a dataset folder, with a report written to disk.
- :func:`plot_training_curves`: per-epoch loss, mAP (regular vs EMA) and learning rate.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY: dict[str, str] = {
    "ClassMetrics": "coco",
    "CocoMetrics": "coco",
    "EvaluationResult": "coco",
    "evaluate_model": "coco",
    "score_predictions": "coco",
    "ImagePredictions": "predictions",
    "predict_dataset": "predictions",
    "evaluate": "api",
    "EvaluationError": "coco",
    "write_report": "report",
    "plot_training_curves": "plots",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rfdetr.evaluation' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"rfdetr.evaluation.{module}"), name)
    globals()[name] = value
    return value
