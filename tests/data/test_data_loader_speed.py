"""The faster loader (issue 17) gives the samples the old one gave, within stated tolerances.

- JPEG decoding through ``torchvision.io.decode_jpeg``: the same pixels as PIL (exact).
- Geometry on the decoders' ``H, W, 3`` memory order: the same uint8 pixels as on a contiguous
  ``[3, H, W]`` copy (exact).
- Items are uint8; the fused normalisation ``x * scale - shift``, now per batch, is within 5e-7
  of ``(x / 255 - mean) / std`` (float32 rounding; stated in :mod:`rfdetr.data.normalize`).
- Persistent workers: every epoch's batches equal those of a fresh single-process loader, and
  worker batches (small targets sent inline as numpy) equal single-process ones.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rfdetr.data.dataset import DetectionDataset, build_dataset
from rfdetr.data.images import load_rgb
from rfdetr.data.loader import EpochLoader, build_dataloader, collate_fn, make_train_sampler
from rfdetr.data.normalize import IMAGENET_MEAN, IMAGENET_STD, normalize_images
from rfdetr.data.synthetic import make_shapes_dataset
from rfdetr.data.transforms import Compose

NORMALISE_TOLERANCE = 5e-7


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """JPEGs of varied sizes around the crop range, so both training branches crop and resize."""
    root = tmp_path_factory.mktemp("shapes")
    return make_shapes_dataset(root, splits={"train": 6, "valid": 2}, image_size=(300, 700))


def noise(height: int, width: int) -> np.ndarray:
    return np.random.default_rng(height * width).integers(0, 256, (height, width, 3), np.uint8)


@pytest.mark.parametrize(
    "mode, options",
    [
        ("RGB", {"quality": 75}),
        ("RGB", {"quality": 95, "subsampling": 0}),
        ("RGB", {"quality": 80, "progressive": True}),
        ("L", {"quality": 90}),
    ],
)
def test_decoding_matches_pil_exactly(tmp_path: Path, mode: str, options: dict) -> None:
    path = tmp_path / "image.jpg"
    Image.fromarray(noise(37, 53)).convert(mode).save(path, **options)
    ours = load_rgb(path)
    expected = np.asarray(Image.open(path).convert("RGB"))
    assert ours.shape == (3, 37, 53) and ours.dtype == torch.uint8
    assert ours.stride() == (1, 53 * 3, 3)  # the decoder's H, W, 3 memory, not copied
    assert np.array_equal(ours.permute(1, 2, 0).numpy(), expected)


def test_other_formats_still_decode_through_pil(tmp_path: Path) -> None:
    path = tmp_path / "image.png"
    Image.fromarray(noise(20, 30)).save(path)
    assert np.array_equal(load_rgb(path).permute(1, 2, 0).numpy(), noise(20, 30))
    cmyk = io.BytesIO()
    Image.fromarray(noise(20, 30)).convert("CMYK").save(cmyk, "JPEG")
    (tmp_path / "cmyk.jpg").write_bytes(cmyk.getvalue())
    expected = np.asarray(Image.open(tmp_path / "cmyk.jpg").convert("RGB"))
    assert np.array_equal(load_rgb(tmp_path / "cmyk.jpg").permute(1, 2, 0).numpy(), expected)


def old_item(dataset: DetectionDataset, epoch: int, index: int) -> tuple[torch.Tensor, dict]:
    """The item as the loader made it before issue 17: contiguous uint8 geometry, then the
    textbook normalisation."""
    image, target = dataset.load_raw(index)
    rng = random.Random((dataset.seed * 1_000_003 + epoch) * 1_000_000_007 + index)
    assert isinstance(dataset.transforms, Compose)
    *geometry, normalize_boxes = dataset.transforms.transforms
    image, target = Compose(geometry)(image.contiguous(), target, rng)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    _, target = normalize_boxes(image, target, rng)
    return (image.to(torch.float32) / 255.0 - mean) / std, target


@pytest.mark.parametrize("train", [True, False])
def test_items_match_the_old_pipeline(shapes: Path, train: bool) -> None:
    dataset = build_dataset(
        shapes, "train", 96, train=train, segmentation=True, scale_multiple=32, seed=5
    )
    for epoch in range(3):
        for index in range(len(dataset)):
            image, target = dataset[(epoch, index)]
            old_image, old_target = old_item(dataset, epoch, index)
            assert image.dtype == torch.uint8 and image.shape == old_image.shape
            normalised = normalize_images(image[None])[0]
            assert (normalised - old_image).abs().max() <= NORMALISE_TOLERANCE
            for key in ("boxes", "labels", "masks", "size"):
                assert torch.equal(target[key], old_target[key]), key


def test_main_process_items_use_one_thread(shapes: Path) -> None:
    dataset = build_dataset(shapes, "valid", 64, train=False)
    seen: list[int] = []
    transforms = dataset.transforms

    def spy(image: torch.Tensor, target: dict, rng: random.Random) -> tuple[torch.Tensor, dict]:
        seen.append(torch.get_num_threads())
        return transforms(image, target, rng)

    dataset.transforms = spy
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        dataset[0]
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def assert_same_target(got: dict, want: dict) -> None:
    """Same keys, same values, tensors stay tensors (worker batches inline small ones)."""
    assert got.keys() == want.keys()
    for key, value in want.items():
        if isinstance(value, torch.Tensor):
            assert isinstance(got[key], torch.Tensor) and torch.equal(got[key], value), key
        else:
            assert got[key] == value, key


def test_evaluation_batches_from_workers_equal_single_process(shapes: Path) -> None:
    dataset = build_dataset(shapes, "train", 64, train=False, segmentation=True)
    single, workers = (list(build_dataloader(dataset, 2, num_workers=n)) for n in (0, 2))
    assert len(single) == len(workers) == 3
    for (images, targets), (expected, expected_targets) in zip(workers, single, strict=True):
        assert torch.equal(images, expected)
        for got, want in zip(targets, expected_targets, strict=True):
            assert_same_target(got, want)


def test_persistent_workers_give_every_epoch_as_a_fresh_loader(shapes: Path) -> None:
    """Reference: what the per-epoch loaders before issue 17 computed, ``set_epoch`` then
    plain indices in the sampler's order."""
    dataset = build_dataset(shapes, "train", 64, train=True, scale_multiple=32, seed=2)
    generator = torch.Generator()
    sampler = make_train_sampler(len(dataset), 2, generator=generator)
    loader = EpochLoader(dataset, sampler, 2, num_workers=2)
    assert loader.loader.persistent_workers
    for epoch in range(3):
        generator.manual_seed(100 + epoch)  # as TrainBatches re-seeds the shuffle per epoch
        batches = list(loader.epoch(epoch))
        generator.manual_seed(100 + epoch)
        order = list(sampler)
        dataset.set_epoch(epoch)
        expected = [collate_fn([dataset[i] for i in order[j : j + 2]]) for j in range(0, 10, 2)]
        for (images, targets), (want_images, want_targets) in zip(batches, expected, strict=True):
            assert torch.equal(images, want_images)
            for got, want in zip(targets, want_targets, strict=True):
                assert_same_target(got, want)
        workers = loader.loader._iterator._workers  # type: ignore[union-attr]
        if epoch == 0:
            first_workers = [w.pid for w in workers]
        assert [w.pid for w in workers] == first_workers  # the same processes every epoch
