"""Batching: the collate function, the tiny-dataset sampler and a DataLoader builder."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from rfdetr.data.transforms import Target

logger = logging.getLogger(__name__)

# Upstream's rule: an epoch has at least this many optimizer steps, however small the dataset.
MIN_STEPS_PER_EPOCH = 5


def collate_fn(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[torch.Tensor, list[Target]]:
    """Stack items into ``images`` ``[B, 3, H, W]`` and a list of ``B`` target dicts.

    Raises:
        ValueError: the images differ in size (training and evaluation resize to a square, so
            this means the transforms were not applied).
    """
    images = [image for image, _ in batch]
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) > 1:
        raise ValueError(f"cannot batch images of different shapes {sorted(shapes)}")
    return torch.stack(images), [target for _, target in batch]


def make_train_sampler(
    num_items: int,
    effective_batch_size: int,
    *,
    min_steps_per_epoch: int = MIN_STEPS_PER_EPOCH,
    generator: torch.Generator | None = None,
) -> Sampler[int]:
    """Shuffle; a dataset too small for ``min_steps_per_epoch`` steps is drawn with replacement.

    Args:
        num_items: items in the training split.
        effective_batch_size: images per optimizer step (batch size x accumulation x replicas).
        min_steps_per_epoch: fewest optimizer steps an epoch may have.
        generator: seeds the draws.

    Returns:
        A ``RandomSampler``: without replacement when the split is large enough, otherwise with
        replacement and ``effective_batch_size * min_steps_per_epoch`` samples (logged).
    """
    if num_items <= 0:
        raise ValueError("the training split is empty")
    wanted = effective_batch_size * min_steps_per_epoch
    if num_items >= wanted:
        return RandomSampler(range(num_items), generator=generator)
    logger.info(
        "training split has %d images, fewer than %d steps x %d images; repeating it: "
        "%d images drawn with replacement per epoch",
        num_items,
        min_steps_per_epoch,
        effective_batch_size,
        wanted,
    )
    return RandomSampler(
        range(num_items), replacement=True, num_samples=wanted, generator=generator
    )


def build_dataloader(
    dataset: Dataset[tuple[torch.Tensor, Target]],
    batch_size: int,
    *,
    train: bool,
    num_workers: int = 0,
    grad_accum_steps: int = 1,
    seed: int = 0,
) -> DataLoader[tuple[torch.Tensor, Target]]:
    """A DataLoader with :func:`collate_fn`.

    Training shuffles (seeded), repeats tiny datasets (:func:`make_train_sampler`) and drops the
    last incomplete batch; evaluation keeps order and every image.
    """
    sampler: Sampler[int]
    if train:
        generator = torch.Generator().manual_seed(seed)
        sampler = make_train_sampler(
            len(dataset),  # type: ignore[arg-type]
            batch_size * grad_accum_steps,
            generator=generator,
        )
    else:
        sampler = SequentialSampler(range(len(dataset)))  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate_fn,
        num_workers=num_workers,
        drop_last=train,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )
