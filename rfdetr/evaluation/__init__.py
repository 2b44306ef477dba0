"""Evaluation: COCO metrics with named fields (:func:`evaluate_model`, the training loop's
evaluator; :func:`evaluate`, a model or checkpoint on a dataset folder with a report on disk)
and plots (:func:`plot_training_curves`)."""

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
