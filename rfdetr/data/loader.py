"""Batching: the collate function, the training samplers and loader, and the evaluation loader."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import (
    DataLoader,
    Dataset,
    RandomSampler,
    Sampler,
    default_collate,
)

from rfdetr.data.normalize import one_thread
from rfdetr.data.transforms import Target

logger = logging.getLogger(__name__)

# Upstream's rule: an epoch has at least this many optimizer steps, however small the dataset.
MIN_STEPS_PER_EPOCH = 5
# Target tensors under this size leave a worker as numpy arrays inside the pickled batch: as
# tensors, each would get its own shared-memory segment and file descriptor to pass.
INLINE_BYTES = 1 << 16


def collate_fn(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[torch.Tensor, list[Target]]:
    """Stack items into ``images`` ``[B, 3, H, W]`` (the items' dtype: uint8 pixels, see
    :mod:`rfdetr.data.normalize`; square, so nothing is padded) and a list of ``B`` targets.
    In a worker, small target tensors cross as numpy arrays (:data:`INLINE_BYTES`).

    Raises:
        ValueError: the images differ in size (training and evaluation resize to a square, so
            this means the transforms were not applied).
    """
    images = [image for image, _ in batch]
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) > 1:
        raise ValueError(f"cannot batch images of different shapes {sorted(shapes)}")
    targets = [target for _, target in batch]
    if torch.utils.data.get_worker_info() is not None:
        targets = [{k: _inline(v) for k, v in target.items()} for target in targets]
    with one_thread():
        return default_collate(images), targets


def _inline(value: object) -> object:
    small = isinstance(value, torch.Tensor) and value.nbytes < INLINE_BYTES
    return value.numpy() if small else value  # type: ignore[union-attr]


def _tensors(target: Target) -> Target:
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in target.items()}


class _Loader(DataLoader):
    """Turns the numpy arrays of worker batches back into tensors."""

    def __iter__(self) -> Iterator:  # type: ignore[override]
        batches = super().__iter__()
        if self.num_workers == 0:
            return batches
        return ((images, [_tensors(target) for target in targets]) for images, targets in batches)


def make_train_sampler(
    num_items: int,
    effective_batch_size: int,
    *,
    generator: torch.Generator | None = None,
) -> Sampler[int]:
    """A shuffling ``RandomSampler`` over ``num_items``; a split smaller than
    :data:`MIN_STEPS_PER_EPOCH` steps of ``effective_batch_size`` images (batch size x
    accumulation x replicas) is drawn with replacement, that many samples (logged)."""
    wanted = effective_batch_size * MIN_STEPS_PER_EPOCH
    if num_items >= wanted:
        return RandomSampler(range(num_items), generator=generator)
    logger.info(
        "training split has %d images, fewer than %d steps x %d images; repeating it: "
        "%d images drawn with replacement per epoch",
        num_items,
        MIN_STEPS_PER_EPOCH,
        effective_batch_size,
        wanted,
    )
    return RandomSampler(
        range(num_items), replacement=True, num_samples=wanted, generator=generator
    )


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, index)`` for each index of ``sampler``, so persistent workers, whose
    dataset copy never sees ``set_epoch``, augment each epoch as fresh workers would."""

    def __init__(self, sampler: Sampler[int]) -> None:
        self.sampler = sampler
        self.epoch = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch  # read once, when the epoch's iteration starts
        return ((epoch, index) for index in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]


class EpochLoader:
    """One training DataLoader for the whole run: worker processes start once, not per epoch.
    The caller re-seeds ``sampler`` for the epoch before iterating (the draw happens then)."""

    def __init__(
        self,
        dataset: Dataset[tuple[torch.Tensor, Target]],
        sampler: Sampler[int],
        batch_size: int,
        *,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
    ) -> None:
        self.sampler = EpochSampler(sampler)
        self.loader = _Loader(
            dataset,
            batch_size=batch_size,
            sampler=self.sampler,  # type: ignore[arg-type]
            collate_fn=collate_fn,
            num_workers=num_workers,
            drop_last=True,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
            # The loader's own generator: iterating never draws from the global torch RNG.
            generator=torch.Generator().manual_seed(seed),
        )

    def epoch(self, epoch: int) -> DataLoader[tuple[torch.Tensor, Target]]:
        """The loader, set to augment as ``epoch``."""
        self.sampler.epoch = epoch
        return self.loader


def build_dataloader(
    dataset: Dataset[tuple[torch.Tensor, Target]], batch_size: int, *, num_workers: int = 0
) -> DataLoader[tuple[torch.Tensor, Target]]:
    """The evaluation DataLoader: dataset order, every image, :func:`collate_fn` batches."""
    return _Loader(
        dataset,
        batch_size=batch_size,
        collate_fn=collate_fn,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
    )
