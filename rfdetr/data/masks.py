"""Instance masks from COCO polygons / RLE and from YOLO polygons, via pycocotools."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


def box_mask(box_xyxy: Sequence[float], height: int, width: int) -> np.ndarray:
    """A filled rectangle, bool ``[H, W]``, for an object that has a box but no polygon.

    Args:
        box_xyxy: pixel ``[x1, y1, x2, y2]``, already clipped to the image.
    """
    mask = np.zeros((height, width), dtype=bool)
    x1, y1, x2, y2 = (round(float(v)) for v in box_xyxy)
    # A box thinner than a pixel still gets one pixel, so the object never has an empty mask.
    x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
    mask[max(y1, 0) : min(y2, height), max(x1, 0) : min(x2, width)] = True
    return mask


def _decode(rle: dict[str, Any]) -> np.ndarray:
    """Decode one RLE into bool ``[H, W]``."""
    with warnings.catch_warnings():
        # pycocotools' C extension trips numpy 2's `copy=False` deprecation on every decode.
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Rasterise pixel polygons ``[[x1, y1, x2, y2, ...], ...]`` (union) into bool ``[H, W]``."""
    rles = mask_utils.frPyObjects([list(map(float, p)) for p in polygons], height, width)
    return _decode(mask_utils.merge(rles))


def coco_segmentation_to_mask(
    segmentation: Any, height: int, width: int, box_xyxy: Sequence[float]
) -> np.ndarray:
    """Bool ``[H, W]`` mask from a COCO segmentation (polygons, RLE) or, when absent, the box.

    Args:
        segmentation: a list of pixel polygons, an RLE dict (``counts`` string or list), or None.
        box_xyxy: pixel ``[x1, y1, x2, y2]`` used when there is no segmentation.
    """
    if not segmentation:
        return box_mask(box_xyxy, height, width)
    if isinstance(segmentation, dict):
        rle = segmentation
        if isinstance(rle["counts"], list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(rle, height, width)
        return _decode(rle)
    return polygons_to_mask(segmentation, height, width)
