"""Evaluation: COCO metrics with named fields, per-class results, reports and plots.

- :func:`evaluate_model` -> :class:`EvaluationResult` (``bbox``, ``segm``, ``per_class``, the
  confidence threshold maximising macro F1, the confusion matrix): the training loop's evaluator.
- :func:`evaluate`: a model or checkpoint on a dataset folder, with a report written to disk.
- :func:`plot_training_curves`: per-epoch loss, mAP (regular vs EMA) and learning rate.
"""

from __future__ import annotations

from rfdetr.utils.lazy import lazy_names

_LAZY: dict[str, str] = {
    "EvaluationResult": "coco",
    "evaluate_model": "coco",
    "evaluate": "api",
    "EvaluationError": "coco",
    "plot_training_curves": "plots",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
