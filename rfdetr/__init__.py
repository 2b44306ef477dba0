"""RF-DETR: real-time detection and instance segmentation transformers, in plain PyTorch.

>>> from rfdetr import RFDETRNano
>>> model = RFDETRNano(pretrain_weights=None)          # random weights; omit for COCO weights
>>> detections = model.predict("image.jpg", threshold=0.5)   # supervision.Detections
"""

from rfdetr.api import RFDETRModel
from rfdetr.config import ModelConfig
from rfdetr.presets import get_preset, list_presets
from rfdetr.variants import (
    RFDETRBase,
    RFDETRLarge,
    RFDETRMedium,
    RFDETRNano,
    RFDETRSeg2XLarge,
    RFDETRSegLarge,
    RFDETRSegMedium,
    RFDETRSegNano,
    RFDETRSegSmall,
    RFDETRSegXLarge,
    RFDETRSmall,
)

__version__ = "0.1.0"

__all__ = [
    "ModelConfig",
    "RFDETRBase",
    "RFDETRLarge",
    "RFDETRMedium",
    "RFDETRModel",
    "RFDETRNano",
    "RFDETRSeg2XLarge",
    "RFDETRSegLarge",
    "RFDETRSegMedium",
    "RFDETRSegNano",
    "RFDETRSegSmall",
    "RFDETRSegXLarge",
    "RFDETRSmall",
    "__version__",
    "get_preset",
    "list_presets",
]
