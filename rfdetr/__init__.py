"""RF-DETR: real-time detection and instance segmentation transformers, in plain PyTorch.

>>> from rfdetr import RFDETRNano
>>> model = RFDETRNano(pretrain_weights=None)  # random weights; omit for COCO weights
>>> detections = model.predict("image.jpg", threshold=0.5)  # supervision.Detections

Public names are imported on first use, so light commands start fast.
"""

from __future__ import annotations

import importlib.metadata as _metadata

from rfdetr.utils.lazy import lazy_names

try:
    __version__ = _metadata.version("rfdetr")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+source"

_LAZY: dict[str, str] = {
    "ModelConfig": "rfdetr.config",
    "get_preset": "rfdetr.config",
    "list_presets": "rfdetr.config",
    "RFDETRModel": "rfdetr.api",
    "RunConfig": "rfdetr.config",
    "fit": "rfdetr.training.loop",
    "evaluate": "rfdetr.evaluation.api",
    "plot_training_curves": "rfdetr.evaluation.plots",
    "ONNXRuntimeModel": "rfdetr.export.runtime",
    "RFDETRNano": "rfdetr.variants",
    "RFDETRSmall": "rfdetr.variants",
    "RFDETRMedium": "rfdetr.variants",
    "RFDETRBase": "rfdetr.variants",
    "RFDETRLarge": "rfdetr.variants",
    "RFDETRSegNano": "rfdetr.variants",
    "RFDETRSegSmall": "rfdetr.variants",
    "RFDETRSegMedium": "rfdetr.variants",
    "RFDETRSegLarge": "rfdetr.variants",
    "RFDETRSegXLarge": "rfdetr.variants",
    "RFDETRSeg2XLarge": "rfdetr.variants",
}

__all__ = ["__version__", *sorted(_LAZY)]


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
