"""ImageNet normalisation: the constants' one home, and the per-batch normalisation.

Dataset items and loader batches hold uint8 pixels (4x less memory to cross from worker
processes, no float work in the workers); whoever feeds a batch to a model turns it into the
model's float input with :func:`normalize_images`, once per batch, on the model's device (the
training step, evaluation). ``predict()`` keeps its own preprocessing
(:func:`rfdetr.inference.preprocess`), from the same constants.
"""

from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_constants(device: torch.device | str | None = None) -> tuple[torch.Tensor, ...]:
    """``(scale, shift)``, float32 ``[1, 3, 1, 1]``: ``x * scale - shift`` equals
    ``(x / 255 - mean) / std`` within 5e-7 (float32 rounding)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return (1 / (255 * std)).to(device), (mean / std).to(device)


def normalize_images(
    images: torch.Tensor, device: torch.device | str | None = None
) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` pixels -> float32 ImageNet-normalised ``[B, 3, H, W]`` on ``device``.

    The uint8 batch is moved first (a quarter of the float bytes; ``non_blocking`` for pinned
    batches), then ``x * scale - shift`` runs there as two element-wise passes (the multiply
    converts as it reads) into one new contiguous buffer, whatever the input's memory order.
    The result is bit-identical to the same formula applied image by image.

    Args:
        images: uint8 ``[B, 3, H, W]``.
        device: where to normalise (default: where ``images`` are).

    Raises:
        TypeError: ``images`` are not uint8 (already normalised, or not pixels).
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize_images takes uint8 pixels, got {images.dtype}")
    images = images.to(device, non_blocking=True)
    scale, shift = normalize_constants(images.device)
    out = torch.empty(images.shape, dtype=torch.float32, device=images.device)
    return torch.mul(images, scale, out=out).sub_(shift)


def model_input(images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A batch as the model takes it, on ``device``: uint8 pixels (loader batches) are
    normalised there (:func:`normalize_images`); float batches are taken as normalised already
    and only moved."""
    if images.dtype == torch.uint8:
        return normalize_images(images, device)
    return images.to(device, non_blocking=True)
