"""uint8 batches normalised where the model runs (issue 17) equal the float batches the loader
made before, and the normalisation is upstream's.

Upstream rfdetr 1.11.2 (wheel, ``rfdetr/datasets/coco.py`` l.1056-1058 and
``rfdetr/datasets/transforms.py`` l.50-56) feeds its model ``ToDtype(float32, scale=True)`` (``x /
255``) then torchvision's ``Normalize`` with ``mean = (0.485, 0.456, 0.406)``, ``std = (0.229,
0.224, 0.225)``: the textbook ``(x / 255 - mean) / std``.
Before this change each item left the loader as float32 ``x * scale - shift`` computed image by
image (``rfdetr.data.transforms.Normalize``, restated in :func:`old_float_item`); now the batch
leaves as uint8 and :func:`rfdetr.data.normalize.normalize_images` applies the same formula per
batch: the float batch, and the multi-scale resize of it, must be bit-identical.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from rfdetr.data.dataset import DetectionDataset, build_dataset
from rfdetr.data.loader import EpochLoader, build_dataloader, collate_fn, make_train_sampler
from rfdetr.data.normalize import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    model_input,
    normalize_batch_into,
    normalize_constants,
    normalize_images,
)
from rfdetr.data.synthetic import make_shapes_dataset
from rfdetr.data.transforms import resize_batch

NORMALISE_TOLERANCE = 5e-7


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    return make_shapes_dataset(root, splits={"train": 6, "valid": 2}, image_size=(300, 700))


def old_float_item(dataset: DetectionDataset, key: tuple[int, int]) -> tuple[torch.Tensor, dict]:
    """The item as the loader made it before: the same uint8 geometry, then the per-image
    ``empty(float32).copy_(x).mul_(scale).sub_(shift)`` with ``[3, 1, 1]`` constants."""
    epoch, index = key
    image, target = dataset.load_raw(index)
    rng = random.Random((dataset.seed * 1_000_003 + epoch) * 1_000_000_007 + index)
    image, target = dataset.transforms(image, target, rng)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    out = torch.empty(image.shape, dtype=torch.float32)
    return out.copy_(image).mul_(1 / (255 * std)).sub_(mean / std), target


def test_every_pixel_value_within_tolerance_of_upstreams_formula() -> None:
    pixels = torch.arange(256, dtype=torch.uint8).repeat(1, 3, 1, 1)  # [1, 3, 1, 256]
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    textbook = (pixels.double() / 255 - mean) / std
    ours = normalize_images(pixels)
    assert ours.dtype == torch.float32 and ours.is_contiguous()
    assert (ours.double() - textbook).abs().max() <= NORMALISE_TOLERANCE


@pytest.mark.parametrize("workers", [0, 2])
def test_training_batches_normalised_then_resized_equal_the_old_float_batches(
    shapes: Path, workers: int
) -> None:
    """Multi-scale training with masks: uint8 batches from the loader (also from worker
    processes), normalised and resized to each step size, equal the old float batches resized
    the same way, bit for bit; targets (boxes, masks) are untouched by the change."""
    dataset = build_dataset(
        shapes, "train", 96, train=True, segmentation=True, scale_multiple=32, seed=3
    )
    generator = torch.Generator()
    sampler = make_train_sampler(len(dataset), 2, generator=generator)
    loader = EpochLoader(dataset, sampler, 2, num_workers=workers)
    for epoch in range(2):
        generator.manual_seed(epoch)
        order = list(sampler)
        generator.manual_seed(epoch)
        for step, (images, targets) in enumerate(loader.epoch(epoch)):
            assert images.dtype == torch.uint8  # what crosses from the workers
            keys = [(epoch, i) for i in order[2 * step : 2 * step + 2]]
            old = [old_float_item(dataset, key) for key in keys]
            old_images = torch.stack([image for image, _ in old])
            assert torch.equal(normalize_images(images), old_images)
            size = dataset.sizes[(epoch + step) % len(dataset.sizes)]
            new_resized, new_targets = resize_batch(normalize_images(images), targets, size)
            old_resized, old_targets = resize_batch(old_images, [t for _, t in old], size)
            assert torch.equal(new_resized, old_resized)
            for got, want in zip(new_targets, old_targets, strict=True):
                assert torch.equal(got["boxes"], want["boxes"])
                assert torch.equal(got["masks"], want["masks"])


def test_evaluation_batches_from_workers_normalise_as_single_process(shapes: Path) -> None:
    dataset = build_dataset(shapes, "valid", 64, train=False, segmentation=True)
    single, workers = (list(build_dataloader(dataset, 2, num_workers=n)) for n in (0, 2))
    for (images, _), (expected, _) in zip(workers, single, strict=True):
        assert images.dtype == expected.dtype == torch.uint8
        assert torch.equal(normalize_images(images), normalize_images(expected))
    old = torch.stack([old_float_item(dataset, (0, i))[0] for i in range(len(dataset))])
    assert torch.equal(normalize_images(single[0][0]), old)


@pytest.mark.parametrize("memory", [torch.contiguous_format, torch.channels_last])
def test_cpu_planes_and_gpu_batch_paths_give_the_same_contiguous_batch(
    shapes: Path, memory: torch.memory_format
) -> None:
    """The CPU normalises plane by plane, other devices the whole batch at once (the path is
    chosen by device, so the batch path runs here on CPU tensors): both equal the old items."""
    dataset = build_dataset(shapes, "valid", 64, train=False)
    images, _ = collate_fn([dataset[i] for i in range(2)])
    old = torch.stack([old_float_item(dataset, (0, i))[0] for i in range(2)])
    images = images.contiguous(memory_format=memory)
    planes = normalize_images(images)
    batch = normalize_batch_into(torch.empty(images.shape), images, *normalize_constants())
    assert planes.is_contiguous() and batch.is_contiguous()
    assert torch.equal(planes, old) and torch.equal(batch, old)


def test_model_input_normalises_pixels_and_passes_normalised_batches() -> None:
    pixels = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(model_input(pixels, "cpu"), normalize_images(pixels))
    ready = torch.randn(2, 3, 8, 8)
    assert model_input(ready, "cpu") is ready
    with pytest.raises(TypeError, match="uint8"):
        normalize_images(ready)
    scale, shift = normalize_constants()
    assert scale.shape == shift.shape == (1, 3, 1, 1) and scale.dtype == torch.float32
