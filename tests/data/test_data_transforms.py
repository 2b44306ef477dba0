"""Transforms keep boxes and masks consistent; the training recipe is seeded."""

from __future__ import annotations

import random

import pytest
import torch

from rfdetr.data.transforms import (
    NormalizeBoxes,
    RandomSizeCrop,
    build_transforms,
    crop,
    hflip,
    multi_scale_sizes,
    pick_step_size,
    resize,
    resize_batch,
)
from rfdetr.utils.box_ops import box_cxcywh_to_xyxy


def mask_box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """Pixel xyxy extent of a bool mask [H, W] (x2, y2 exclusive)."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def sample(height: int = 40, width: int = 60) -> tuple[torch.Tensor, dict]:
    """An image [3, H, W] uint8 with a gradient, and 3 objects whose masks fill their boxes."""
    image = torch.arange(width, dtype=torch.uint8).repeat(3, height, 1)
    boxes = torch.tensor([[2, 4, 12, 20], [30, 10, 58, 30], [40, 0, 60, 8]], dtype=torch.float32)
    masks = torch.zeros(3, height, width, dtype=torch.bool)
    for i, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
        masks[i, y1:y2, x1:x2] = True
    target = {
        "boxes": boxes,
        "labels": torch.tensor([0, 1, 2]),
        "area": (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
        "iscrowd": torch.zeros(3, dtype=torch.int64),
        "masks": masks,
    }
    return image, target


def test_flip_mirrors_box_mask_and_pixels() -> None:
    image, target = sample()
    flipped, out = hflip(image, target)
    assert out["boxes"][0].tolist() == [60 - 12, 4, 60 - 2, 20]
    for box, mask in zip(out["boxes"], out["masks"], strict=True):
        assert mask_box(mask) == tuple(int(v) for v in box.tolist())
    assert torch.equal(flipped[:, :, 0], image[:, :, -1])
    again, back = hflip(flipped, out)
    assert torch.equal(again, image)
    assert torch.equal(back["boxes"], target["boxes"])


def test_resize_scales_boxes_and_masks_together() -> None:
    image, target = sample()
    resized, out = resize(image, target, 80, 120)
    assert resized.shape == (3, 80, 120)
    assert torch.allclose(out["boxes"], target["boxes"] * 2)
    assert torch.allclose(out["area"], target["area"] * 4)
    for box, mask in zip(out["boxes"], out["masks"], strict=True):
        assert mask_box(mask) == tuple(int(v) for v in box.tolist())


def test_crop_clips_and_drops_boxes_consistently_with_masks() -> None:
    image, target = sample()
    # Window x 10..50, y 5..35: box 0 is clipped, box 1 clipped, box 2 is cut to y 5..8.
    cropped, out = crop(image, target, top=5, left=10, height=30, width=40)
    assert cropped.shape == (3, 30, 40)
    assert out["labels"].tolist() == [0, 1, 2]
    assert out["boxes"].tolist() == [[0, 0, 2, 15], [20, 5, 40, 25], [30, 0, 40, 3]]
    assert out["masks"].shape == (3, 30, 40)
    for box, mask in zip(out["boxes"], out["masks"], strict=True):
        assert mask_box(mask) == tuple(int(v) for v in box.tolist())
    assert torch.equal(out["area"], torch.tensor([30.0, 400.0, 30.0]))

    # A window that misses object 0 entirely drops its box, label, area and mask together.
    _, out = crop(image, target, top=0, left=20, height=30, width=40)
    assert out["labels"].tolist() == [1, 2]
    assert len(out["boxes"]) == len(out["masks"]) == len(out["area"]) == len(out["iscrowd"]) == 2


def test_crop_drops_object_whose_mask_is_outside_the_window() -> None:
    image, target = sample()
    # Object 1's mask only covers the right half of its box.
    target["masks"][1, :, :44] = False
    _, out = crop(image, target, top=0, left=0, height=40, width=40)
    assert out["labels"].tolist() == [0]


def test_normalize_boxes_gives_cxcywh_in_unit_range_and_keeps_the_pixels() -> None:
    image, target = sample()
    pixels, out = NormalizeBoxes()(image, target, random.Random(0))
    assert pixels is image  # uint8, normalised per batch where the model runs
    assert out["size"].tolist() == [40, 60]
    assert torch.allclose(out["boxes"][0], torch.tensor([7 / 60, 12 / 40, 10 / 60, 16 / 40]))
    back = box_cxcywh_to_xyxy(out["boxes"]) * torch.tensor([60, 40, 60, 40])
    assert torch.allclose(back, target["boxes"], atol=1e-4)


def test_random_size_crop_handles_images_smaller_than_the_range() -> None:
    image, target = sample()
    cropped, out = RandomSizeCrop(384, 600)(image, target, random.Random(3))
    assert cropped.shape == (3, 40, 60)
    assert torch.equal(out["boxes"], target["boxes"])


@pytest.mark.parametrize("seed", range(12))
def test_training_pipeline_keeps_boxes_and_masks_consistent(seed: int) -> None:
    image, target = sample()
    transform = build_transforms(True, 64, crop_short_sides=(48, 56), crop_range=(32, 48))
    out_image, out = transform(image, target, random.Random(seed))
    assert out_image.shape == (3, 64, 64)
    n = len(out["labels"])
    assert out["boxes"].shape == (n, 4) and out["masks"].shape == (n, 64, 64)
    boxes = out["boxes"]
    assert bool(((boxes >= 0) & (boxes <= 1)).all())
    assert bool((boxes[:, 2:] > 0).all())
    pixel = box_cxcywh_to_xyxy(boxes) * 64
    for box, mask in zip(pixel, out["masks"], strict=True):
        assert mask.any()
        x1, y1, x2, y2 = mask_box(mask)
        # Nearest-neighbour mask resizing may shift an edge by up to one output pixel.
        assert x1 >= box[0] - 1.5 and y1 >= box[1] - 1.5
        assert x2 <= box[2] + 1.5 and y2 <= box[3] + 1.5


def test_training_pipeline_is_reproducible() -> None:
    transform = build_transforms(True, 64, crop_short_sides=(48, 56), crop_range=(32, 48))
    first = transform(*sample(), random.Random(7))
    second = transform(*sample(), random.Random(7))
    assert torch.equal(first[0], second[0])
    assert torch.equal(first[1]["boxes"], second[1]["boxes"])
    outputs = {
        tuple(transform(*sample(), random.Random(s))[1]["boxes"].flatten().tolist())
        for s in range(8)
    }
    assert len(outputs) > 1  # different seeds give different augmentations


def test_validation_pipeline_is_a_square_resize() -> None:
    image, target = sample()
    out_image, out = build_transforms(False, 32)(image, target, random.Random(0))
    assert out_image.shape == (3, 32, 32)
    assert torch.allclose(out["boxes"][0], torch.tensor([7 / 60, 12 / 40, 10 / 60, 16 / 40]))
    assert out["masks"].shape == (3, 32, 32)


def test_multi_scale_sizes_match_upstream() -> None:
    assert multi_scale_sizes(384, 32) == [288, 320, 352, 384, 416, 448, 480, 512]
    assert multi_scale_sizes(384, 32, expanded=True) == list(range(224, 545, 32))
    assert multi_scale_sizes(64, 32) == [64, 96, 128, 160, 192]
    assert all(s % 24 == 0 for s in multi_scale_sizes(432, 24))
    with pytest.raises(ValueError):
        multi_scale_sizes(0, 32)


def test_step_size_is_seeded_and_batch_resize_keeps_targets() -> None:
    sizes = multi_scale_sizes(384, 32)
    picks = [pick_step_size(sizes, step, seed=1) for step in range(20)]
    assert picks == [pick_step_size(sizes, step, seed=1) for step in range(20)]
    assert set(picks) <= set(sizes) and len(set(picks)) > 1
    images = torch.randn(2, 3, 64, 64)
    masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    masks[0, 16:48, 0:32] = True
    targets = [
        {"boxes": torch.tensor([[0.25, 0.5, 0.5, 0.5]]), "masks": masks},
        {"boxes": torch.zeros(0, 4)},
    ]
    out_images, out_targets = resize_batch(images, targets, 32)
    assert out_images.shape == (2, 3, 32, 32)
    assert torch.equal(out_targets[0]["boxes"], targets[0]["boxes"])
    assert mask_box(out_targets[0]["masks"][0]) == (0, 8, 16, 24)
    assert out_targets[1]["size"].tolist() == [32, 32]
