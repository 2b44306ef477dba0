"""Input handling for `predict()`: many image types in, one normalised batch out; and the
`supervision.Detections` out."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv
import torch
import torch.nn.functional as F
from PIL import Image

from rfdetr.data.images import load_rgb, pil_to_uint8
from rfdetr.data.normalize import IMAGENET_MEAN, IMAGENET_STD

ImageInput = str | Path | Image.Image | np.ndarray | torch.Tensor
# One confidence threshold, or one per class: {class name or 0-based id: threshold}, with "*"
# for every class not listed (0.5 when "*" is absent).
Thresholds = float | Mapping[str | int, float]
DEFAULT_THRESHOLD = 0.5


def resolve_thresholds(threshold: Thresholds, class_names: list[str]) -> float | torch.Tensor:
    """``threshold`` as `PostProcess` takes it: a float, or a ``[C]`` tensor (one per class id).

    Raises:
        ValueError: a key that is no class name or id, or a value that is not a number in
            [0, 1] (one line).
    """
    if not isinstance(threshold, Mapping):
        return in_unit_range(threshold, "threshold")
    ids = {name: index for index, name in enumerate(class_names)}
    default = threshold.get("*", DEFAULT_THRESHOLD)
    per_class = torch.full((len(class_names),), in_unit_range(default, "threshold for '*'"))
    for key, value in threshold.items():
        number = in_unit_range(value, f"threshold for {key!r}")
        if key == "*":
            continue
        index = key if isinstance(key, int) and not isinstance(key, bool) else ids.get(key)
        if index is None or not 0 <= index < len(class_names):
            raise ValueError(
                f"threshold for {key!r}: not a class name or id of this model "
                f"(classes: {', '.join(class_names)})"
            )
        per_class[index] = number
    return per_class


def in_unit_range(value: Any, what: str) -> float:
    """``value`` as a float; a one-line `ValueError` naming ``what`` unless it is in [0, 1]."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{what} must be in [0, 1], got {value}")
    return number


def to_float_chw(image: ImageInput, index: int = 0) -> torch.Tensor:
    """Convert one image to a ``[3, H, W]`` float tensor in [0, 1] (RGB).

    Accepts a file path, a PIL image, an ``[H, W, 3]`` RGB uint8 (or [0, 1] float) numpy array,
    or a ``[3, H, W]`` float tensor in [0, 1]. Anything else raises a one-line `ValueError`
    naming the offending input.
    """
    where = f"image {index}"
    if isinstance(image, str | Path):
        tensor = load_rgb(Path(image)).float() / 255.0  # training's decode: a DatasetError
    elif isinstance(image, Image.Image):
        tensor = pil_to_uint8(image, where).float() / 255.0
    elif isinstance(image, np.ndarray):
        tensor = _from_numpy(image, where)
    elif isinstance(image, torch.Tensor):
        tensor = _from_tensor(image, where)
    else:
        raise ValueError(
            f"{where}: unsupported type {type(image).__name__}; pass a path, PIL image, "
            "HxWx3 RGB numpy array or 3xHxW float tensor in [0, 1]"
        )
    if not tensor.shape[1] or not tensor.shape[2]:
        raise ValueError(f"{where}: empty image ({tensor.shape[1]}x{tensor.shape[2]} pixels)")
    return tensor


def _from_numpy(array: np.ndarray, where: str) -> torch.Tensor:
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"{where}: numpy image must be HxWx3 RGB, got shape {tuple(array.shape)}")
    if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"{where}: numpy image must be uint8 (or float in [0, 1]), got {array.dtype}"
        )
    pixels = np.require(array, requirements=["C", "W"])  # PIL arrays are read-only
    chw = torch.from_numpy(pixels).permute(2, 0, 1)
    return chw.float() / 255.0 if array.dtype == np.uint8 else _from_tensor(chw, where)


def _from_tensor(tensor: torch.Tensor, where: str) -> torch.Tensor:
    if tensor.dim() != 3 or tensor.shape[0] != 3:
        raise ValueError(
            f"{where}: tensor image must be 3xHxW RGB, got shape {tuple(tensor.shape)}"
        )
    if not tensor.is_floating_point():
        raise ValueError(f"{where}: tensor image must be float in [0, 1], got {tensor.dtype}")
    if tensor.numel() and (tensor.max() > 1 or tensor.min() < 0):
        raise ValueError(
            f"{where}: tensor values must lie in [0, 1] (got {tensor.min().item():.3g}.."
            f"{tensor.max().item():.3g}); divide uint8 pixels by 255"
        )
    return tensor.float()


def preprocess(
    images: list[torch.Tensor],
    size: int | tuple[int, int],
    device: torch.device | str,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize to ``size`` (a square side, or ``(h, w)``) and normalise a list of ``[3, H_i, W_i]``
    images in [0, 1]: bilinear, no antialiasing, aspect ratio ignored, as upstream's `predict()`.

    Returns:
        ``([B, 3, h, w]`` normalised batch, ``[B, 2]`` original ``(h, w)``).
    """
    shape = (size, size) if isinstance(size, int) else tuple(size)
    sizes = torch.tensor([list(img.shape[-2:]) for img in images], device=device)
    # PyTorch's defaults are upstream's: align_corners=False, antialias=False.
    batch = torch.cat(
        [F.interpolate(img.to(device)[None], shape, mode="bilinear") for img in images]
    )
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    return (batch - mean_t) / std_t, sizes


def to_detections(result: dict[str, torch.Tensor], class_names: list[str]) -> sv.Detections:
    """One image's `PostProcess` result -> `supervision.Detections` with ``class_name`` data."""
    class_id = result["labels"].cpu().numpy().astype(int)
    names = np.array([class_names[i] for i in class_id], dtype=object)
    masks = result.get("masks")
    return sv.Detections(
        xyxy=result["boxes"].float().cpu().numpy(),
        confidence=result["scores"].float().cpu().numpy(),
        class_id=class_id,
        mask=masks.cpu().numpy() if masks is not None else None,
        data={"class_name": names},
    )


def predict_images(
    images: ImageInput | list[ImageInput],
    threshold: Thresholds,
    batch_size: int,
    class_names: list[str],
    prepare: Callable[[list[torch.Tensor]], tuple[torch.Tensor, torch.Tensor]],
    open_model: Callable[[], Callable[[torch.Tensor], Any]],
    postprocess: Callable[..., list[dict[str, torch.Tensor]]],
) -> sv.Detections | list[sv.Detections]:
    """The ``predict`` of `RFDETRModel` and `ONNXRuntimeModel`: inputs checked first, then
    ``open_model()`` (it may export) and ``batch_size`` images at a time through ``prepare``
    (``[3, H_i, W_i]`` in [0, 1] -> ``[B, 3, h, w]`` normalised, ``[B, 2]`` sizes), the model
    and ``postprocess``; one `sv.Detections` for a single image, else a list."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    single = not isinstance(images, list | tuple)
    items = [images] if single else list(images)
    tensors = [to_float_chw(item, index) for index, item in enumerate(items)]
    thresholds = resolve_thresholds(threshold, class_names)
    forward = open_model()
    detections = []
    for start in range(0, len(tensors), batch_size):
        batch, sizes = prepare(tensors[start : start + batch_size])
        with torch.inference_mode():
            results = postprocess(forward(batch), sizes, threshold=thresholds)
        detections.extend(to_detections(result, class_names) for result in results)
    return detections[0] if single else detections
