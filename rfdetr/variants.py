"""One public class per RF-DETR size; each only names its preset."""

from __future__ import annotations

from rfdetr.api import RFDETRModel


class RFDETRNano(RFDETRModel):
    """Detection, 384 px, 30.5 M parameters."""

    size = "nano"


class RFDETRSmall(RFDETRModel):
    """Detection, 512 px, 32.1 M parameters."""

    size = "small"


class RFDETRMedium(RFDETRModel):
    """Detection, 576 px, 33.7 M parameters."""

    size = "medium"


class RFDETRBase(RFDETRModel):
    """Detection, 560 px, patch 14 (upstream's original size; deprecated there)."""

    size = "base"


class RFDETRLarge(RFDETRModel):
    """Detection, 704 px, 33.9 M parameters."""

    size = "large"


class RFDETRSegNano(RFDETRModel):
    """Instance segmentation, 312 px, 33.6 M parameters."""

    size = "seg-nano"


class RFDETRSegSmall(RFDETRModel):
    """Instance segmentation, 384 px, 33.7 M parameters."""

    size = "seg-small"


class RFDETRSegMedium(RFDETRModel):
    """Instance segmentation, 432 px, 35.7 M parameters."""

    size = "seg-medium"


class RFDETRSegLarge(RFDETRModel):
    """Instance segmentation, 504 px, 35.9 M parameters."""

    size = "seg-large"


class RFDETRSegXLarge(RFDETRModel):
    """Instance segmentation, 624 px, 38.1 M parameters."""

    size = "seg-xlarge"


class RFDETRSeg2XLarge(RFDETRModel):
    """Instance segmentation, 768 px, 38.6 M parameters."""

    size = "seg-2xlarge"
