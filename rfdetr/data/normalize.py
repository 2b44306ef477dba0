"""ImageNet normalisation: the constants' one home, and the per-batch normalisation.

Dataset items and loader batches hold uint8 pixels (4x fewer bytes to cross from worker
processes, no float work in the workers); whoever feeds a batch to a model (the training step,
evaluation) normalises it with :func:`normalize_images`, once per batch, on the model's device.
``predict()`` preprocesses with the same constants (:func:`rfdetr.inference.preprocess`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run loading work on one intra-op thread, as DataLoader workers do: in the main process,
    with another process on the other core, spin-waiting OpenMP threads made item loading 4-6x
    slower (issue 17) unless ``OMP_WAIT_POLICY=PASSIVE`` was set."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def normalize_constants(device: torch.device | str | None = None) -> tuple[torch.Tensor, ...]:
    """``(scale, shift)``, float32 ``[1, 3, 1, 1]``: ``x * scale - shift`` equals
    ``(x / 255 - mean) / std`` within 5e-7 (float32 rounding)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return (1 / (255 * std)).to(device), (mean / std).to(device)


def normalize_images(
    images: torch.Tensor, device: torch.device | str | None = None
) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` pixels -> float32 ImageNet-normalised ``[B, 3, H, W]`` on ``device``
    (default: where ``images`` are).

    The uint8 batch is moved first (``non_blocking`` for pinned batches), then ``x * scale -
    shift`` runs there in two element-wise passes into one new contiguous buffer, bit-identical
    to the formula applied image by image. On the CPU the passes run one ``[H, W]`` plane at a
    time, so the second finds the plane in cache (a batch of 4 at 544 px: 1.3-1.7 ms instead of
    3.7 ms), on one thread (:func:`one_thread`: two spin-waiting threads were 2x slower beside
    the loader's workers, issue 17).

    Raises:
        TypeError: ``images`` are not uint8 (already normalised, or not pixels).
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize_images takes uint8 pixels, got {images.dtype}")
    images = images.to(device, non_blocking=True)
    scale, shift = normalize_constants(images.device)
    out = torch.empty(images.shape, dtype=torch.float32, device=images.device)
    if images.device.type != "cpu":
        return normalize_batch_into(out, images, scale, shift)
    scales, shifts = scale.flatten(), shift.flatten()
    with one_thread():
        for index in range(images.shape[0]):
            for channel in range(images.shape[1]):
                plane = out[index, channel]
                torch.mul(images[index, channel], scales[channel], out=plane)
                plane.sub_(shifts[channel])
    return out


def normalize_batch_into(
    out: torch.Tensor, images: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor
) -> torch.Tensor:
    """``out = images * scale - shift`` over the whole batch: two kernels on a GPU."""
    return torch.mul(images, scale, out=out).sub_(shift)


def model_input(images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A batch as the model takes it, on ``device``: uint8 pixels (loader batches) are
    normalised there (:func:`normalize_images`); float batches are taken as normalised already
    and only moved."""
    if images.dtype == torch.uint8:
        return normalize_images(images, device)
    return images.to(device, non_blocking=True)
