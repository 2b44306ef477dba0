"""Instance masks from COCO polygons / RLE and from YOLO polygons, via pycocotools.

pycocotools trusts its input (a polygon far outside the image costs memory or crashes it; RLE
counts not adding up to ``h * w`` write out of bounds), so :func:`polygon_problem` and
:func:`rle_problem` check first: validation reports, the mask functions refuse.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

# Polygon points may overhang the image (annotation tools do), by at most this many image sizes.
POLYGON_MARGIN = 1.0
# One count of a compressed RLE string is at most this many characters (5 bits each).
_MAX_RLE_CHARS = 13


def box_mask(box_xyxy: Sequence[float], height: int, width: int) -> np.ndarray:
    """A filled rectangle, bool ``[H, W]``, from a pixel ``xyxy`` box clipped to the image."""
    mask = np.zeros((height, width), dtype=bool)
    x1, y1, x2, y2 = (round(float(v)) for v in box_xyxy)
    # A box thinner than a pixel still gets one pixel, so the object never has an empty mask.
    x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
    mask[max(y1, 0) : min(y2, height), max(x1, 0) : min(x2, width)] = True
    return mask


def polygon_problem(polygon: Sequence[float], height: int, width: int) -> str | None:
    """Why a pixel polygon ``[x1, y1, x2, y2, ...]`` cannot be rasterised, or None."""
    if len(polygon) < 6 or len(polygon) % 2:
        return f"polygon with {len(polygon)} values; needs an even number, at least 6"
    if not all(map(math.isfinite, polygon)):
        return "polygon has a coordinate that is not a finite number"
    xs, ys = polygon[0::2], polygon[1::2]
    for values, size in ((xs, width), (ys, height)):
        low, high = -POLYGON_MARGIN * size, (1 + POLYGON_MARGIN) * size
        bad = next((v for v in values if not low <= v <= high), None)
        if bad is not None:
            return f"polygon coordinate {bad:g} lies far outside the {width}x{height} image"
    return None


def rle_counts(counts: str | list[Any]) -> list[int] | None:
    """The run lengths of an RLE (a COCO compressed string or a list), or None when malformed.

    The string form is pycocotools' (``maskApi.c``, ``rleFrString``): each count is 5-bit
    groups in characters ``'0'..'o'`` (``0x20`` = more groups follow, ``0x10`` in the last group
    = negative); from the third count on, each is stored as the difference to the one two
    places back.
    """
    if isinstance(counts, list):
        ok = all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)
        return list(counts) if ok else None
    values: list[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(counts) or shift >= 5 * _MAX_RLE_CHARS:
                return None
            code = ord(counts[position]) - 48
            if not 0 <= code < 64:
                return None
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            position, shift = position + 1, shift + 5
            if not more and code & 0x10:
                value -= 1 << shift
        if len(values) > 2:
            value += values[-2]
        if value < 0:
            return None
        values.append(value)
    return values


def rle_problem(rle: dict[str, Any], height: int, width: int) -> str | None:
    """Why a COCO RLE (``{"size": [h, w], "counts": ...}``) cannot be decoded, or None."""
    size, counts = rle.get("size"), rle.get("counts")
    if not isinstance(counts, (str, list)):
        return "RLE segmentation needs 'counts' (a string or a list of integers)"
    if size != [height, width]:
        return f"RLE size {size!r} differs from the image size [{height}, {width}] (h, w)"
    runs = rle_counts(counts)
    if runs is None:
        return "RLE counts are malformed (not a COCO RLE string or a list of counts >= 0)"
    if sum(runs) != height * width:
        return f"RLE counts add up to {sum(runs)} pixels, not {height}x{width} = {height * width}"
    return None


def _decode(rle: dict[str, Any]) -> np.ndarray:
    with warnings.catch_warnings():
        # pycocotools' C extension trips numpy 2's `copy=False` deprecation on every decode.
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Rasterise pixel polygons ``[[x1, y1, x2, y2, ...], ...]`` (union) into bool ``[H, W]``;
    ValueError for a polygon :func:`polygon_problem` refuses."""
    floats = [[float(v) for v in p] for p in polygons]
    for polygon in floats:
        problem = polygon_problem(polygon, height, width)
        if problem:
            raise ValueError(problem)
    rles = mask_utils.frPyObjects(floats, height, width)
    return _decode(mask_utils.merge(rles))


def coco_segmentation_to_mask(
    segmentation: Any, height: int, width: int, box_xyxy: Sequence[float]
) -> np.ndarray:
    """Bool ``[H, W]`` mask from a COCO segmentation (pixel polygons, an RLE dict) or, when it
    is empty, the pixel ``xyxy`` box. ValueError for a malformed RLE or polygon."""
    if not segmentation:
        return box_mask(box_xyxy, height, width)
    if isinstance(segmentation, dict):
        problem = rle_problem(segmentation, height, width)
        if problem:
            raise ValueError(problem)
        rle = dict(segmentation)
        if isinstance(rle["counts"], list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(rle, height, width)
        return _decode(rle)
    return polygons_to_mask(segmentation, height, width)
