"""Open Inference Protocol v2 tensors <-> RF-DETR inputs and detections, with input limits.

Request: exactly one of ``images`` (BYTES ``[B]``, encoded image files; base64 text inside JSON)
or ``input`` (FP32 ``[B, 3, H, W]`` at the model's input size, normalised, with optional
``orig_size`` INT32/INT64 ``[B, 2]``: each original (height, width), default ``H, W``); request
parameter ``threshold`` (float in [0, 1], default the server's). Response, the request's ``N``
detections flattened: ``boxes`` FP32 ``[N, 4]`` pixel xyxy, ``scores`` FP32 ``[N]``,
``class_ids`` INT64 ``[N]`` (0-based), ``class_names`` BYTES ``[N]``, ``batch_index`` INT64
``[N]`` (the request's image) and, for Seg models, ``masks`` BYTES ``[N]``: COCO RLE as JSON
(``{"size": [h, w], "counts"}``). A bad request raises :class:`kserve.errors.InvalidInput`
(HTTP 400) with one line.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import supervision as sv
import torch
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest
from PIL import Image, UnidentifiedImageError

from rfdetr.evaluation.predictions import encode_masks
from rfdetr.export.metadata import ExportMetadata
from rfdetr.export.runtime import ONNXRuntimeModel
from rfdetr.inference import in_unit_range, to_float_chw

IMAGES, TENSOR, ORIG_SIZE = "images", "input", "orig_size"
_INT_TYPES = ("INT32", "INT64")


@dataclass(frozen=True)
class Limits:
    """What one request may carry; anything beyond is refused with a 400."""

    max_request_bytes: int = 8 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_images: int = 16
    default_threshold: float = 0.5


@dataclass(frozen=True)
class ParsedRequest:
    """A request made ready for the runtime: ``batch`` ``[B, 3, H, W]`` normalised FP32 at the
    model's input size, ``sizes`` ``[B, 2]`` original (height, width) of each image."""

    batch: torch.Tensor
    sizes: torch.Tensor
    threshold: float


def _as_array(request_input: Any) -> np.ndarray:
    try:
        return request_input.as_numpy()
    except InvalidInput:
        raise
    except (ValueError, TypeError, IndexError, OverflowError) as error:
        raise InvalidInput(
            f"input {request_input.name!r}: data does not match datatype "
            f"{request_input.datatype} and shape {list(request_input.shape)} ({error})"
        ) from None


def parse_request(
    request: InferRequest, runtime: ONNXRuntimeModel, limits: Limits
) -> ParsedRequest:
    """Validate a v2 request and turn it into a normalised batch (see the module docstring).

    Raises:
        InvalidInput: a missing, unknown or malformed input, a bad threshold, too many images,
            an image that is not an image or has too many pixels.
    """
    meta = runtime.metadata
    by_name = {item.name: item for item in request.inputs}
    unknown = sorted(set(by_name) - {IMAGES, TENSOR, ORIG_SIZE})
    if unknown:
        raise InvalidInput(f"unknown input(s) {unknown}; send '{IMAGES}' or '{TENSOR}'")
    if (IMAGES in by_name) == (TENSOR in by_name):
        raise InvalidInput(
            f"send exactly one of the inputs '{IMAGES}' (BYTES) or '{TENSOR}' (FP32)"
        )
    threshold = _threshold(request.parameters, limits.default_threshold)
    if IMAGES in by_name:
        if ORIG_SIZE in by_name:
            raise InvalidInput(f"'{ORIG_SIZE}' goes with '{TENSOR}' only")
        batch, sizes = _images(by_name[IMAGES], runtime, limits)
    else:
        batch, sizes = _tensor(by_name[TENSOR], by_name.get(ORIG_SIZE), meta, limits)
    return ParsedRequest(batch, sizes, threshold)


def _threshold(parameters: Any, default: float) -> float:
    if not parameters or "threshold" not in parameters:
        return default
    value = parameters["threshold"]
    if hasattr(value, "WhichOneof"):  # a gRPC InferParameter
        kind = value.WhichOneof("parameter_choice")
        if kind is None:  # KServe's InferParameter has no double_param: the float was dropped
            raise InvalidInput("parameter 'threshold': over gRPC send it as a string, e.g. '0.4'")
        value = getattr(value, kind)
    try:
        return in_unit_range(value, "parameter 'threshold'")
    except ValueError as error:
        raise InvalidInput(str(error)) from None


def _images(
    item: Any, runtime: ONNXRuntimeModel, limits: Limits
) -> tuple[torch.Tensor, torch.Tensor]:
    if item.datatype != "BYTES":
        raise InvalidInput(
            f"input '{IMAGES}' must be BYTES (encoded image files), got {item.datatype}"
        )
    array = _as_array(item).reshape(-1)
    if not 1 <= len(array) <= limits.max_images:
        raise InvalidInput(f"input '{IMAGES}': {len(array)} images; send 1 to {limits.max_images}")
    tensors = [
        to_float_chw(decode_image(value, index, limits), index) for index, value in enumerate(array)
    ]
    return runtime.preprocess(tensors)  # the runtime's own resize + normalisation


def decode_image(value: Any, index: int, limits: Limits) -> Image.Image:
    """One element of ``images`` -> an RGB PIL image, its pixel count checked before decoding."""
    where = f"input '{IMAGES}'[{index}]"
    data = value
    if isinstance(value, str):  # JSON carries bytes as text: base64
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"{where}: text that is not base64 of an image file") from None
    if not isinstance(data, bytes | bytearray) or not data:
        raise InvalidInput(f"{where}: empty or not bytes")
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
        width, height = image.size
        if width * height > limits.max_image_pixels:
            raise InvalidInput(
                f"{where}: {width}x{height} pixels is over the limit of "
                f"{limits.max_image_pixels} pixels per image"
            )
        return image.convert("RGB")
    except InvalidInput:
        raise
    except UnidentifiedImageError:
        raise InvalidInput(f"{where}: not an image file (no known image format)") from None
    except Image.DecompressionBombError as error:
        raise InvalidInput(f"{where}: image too large ({error})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:  # PIL: "not an image"
        raise InvalidInput(f"{where}: not a readable image file ({error})") from None


def _tensor(
    item: Any, orig: Any | None, meta: ExportMetadata, limits: Limits
) -> tuple[torch.Tensor, torch.Tensor]:
    height, width = meta.input_shape
    expected = f"FP32 [B, 3, {height}, {width}]"
    if item.datatype != "FP32":
        raise InvalidInput(f"input '{TENSOR}' must be {expected}, got datatype {item.datatype}")
    shape = list(item.shape)
    if len(shape) != 4 or shape[1:] != [3, height, width] or not 1 <= shape[0] <= limits.max_images:
        raise InvalidInput(
            f"input '{TENSOR}' must be {expected} with 1 <= B <= {limits.max_images}, "
            f"got shape {shape}"
        )
    array = _as_array(item)
    if not np.isfinite(array).all():
        raise InvalidInput(f"input '{TENSOR}': contains NaN or infinity")
    batch = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if orig is None:
        return batch, torch.tensor([[height, width]] * len(batch))
    if orig.datatype not in _INT_TYPES or list(orig.shape) != [len(batch), 2]:
        raise InvalidInput(
            f"input '{ORIG_SIZE}' must be INT32/INT64 [{len(batch)}, 2], got "
            f"{orig.datatype} {list(orig.shape)}"
        )
    sizes = _as_array(orig).astype(np.int64)
    if (sizes < 1).any() or (sizes[:, 0] * sizes[:, 1] > limits.max_image_pixels).any():
        raise InvalidInput(
            f"input '{ORIG_SIZE}': sizes must be positive and at most "
            f"{limits.max_image_pixels} pixels per image"
        )
    return batch, torch.from_numpy(sizes)


def encode_detections(detections: list[sv.Detections], segmentation: bool) -> list[InferOutput]:
    """Per-image detections (at least one image) -> the flattened response tensors."""
    boxes = np.concatenate([d.xyxy.astype(np.float32).reshape(-1, 4) for d in detections])
    names = [str(n).encode() for d in detections for n in d.data["class_name"]]
    image = np.concatenate([np.full(len(d), i, np.int64) for i, d in enumerate(detections)])
    rows = {
        "boxes": ("FP32", boxes),
        "scores": ("FP32", np.concatenate([d.confidence.astype(np.float32) for d in detections])),
        "class_ids": ("INT64", np.concatenate([d.class_id.astype(np.int64) for d in detections])),
        "class_names": ("BYTES", np.array(names, dtype=object)),
        "batch_index": ("INT64", image),
    }
    if segmentation:
        found = [d.mask for d in detections if d.mask is not None]
        masks = [json.dumps(rle).encode() for mask in found for rle in encode_masks(mask)]
        rows["masks"] = ("BYTES", np.array(masks, dtype=object))
    return [
        InferOutput(name=name, shape=list(data.shape), datatype=dtype, data=data)
        for name, (dtype, data) in rows.items()
    ]
