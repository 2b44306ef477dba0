"""Box- and mask-aware transforms with the upstream RF-DETR training recipe.

Every transform is called as ``transform(image, target, rng)``: ``image`` uint8 ``[3, H, W]``
throughout (its memory may stay ``H, W, 3``, as decoded); ``target`` as a
:class:`~rfdetr.data.dataset.DetectionDataset` item's, but with **pixel xyxy** ``boxes`` until
:class:`NormalizeBoxes` makes them **normalised cxcywh**; ``rng`` a ``random.Random`` owned by
the caller, so a seeded item is reproducible whatever worker loads it.

:func:`build_transforms` gives the pipelines (:class:`Geometry`, then :class:`NormalizeBoxes`);
with multi-scale the dataset resizes to the largest of :func:`multi_scale_sizes` and the training
step resizes each batch (:func:`resize_batch`) to :func:`pick_step_size`'s.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from rfdetr.utils.box_ops import box_xyxy_to_cxcywh

Target = dict[str, Any]
# ``transform(image, target, rng) -> (image, target)``: the module docstring.
Transform = Callable[[torch.Tensor, Target, random.Random], tuple[torch.Tensor, Target]]
# Keys holding one entry per object; a crop filters them all with the same mask.
PER_OBJECT_KEYS = ("boxes", "labels", "area", "iscrowd", "masks")


def hflip(image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
    """Mirror left-right: pixel box ``[x1, y1, x2, y2]`` becomes ``[W - x2, y1, W - x1, y2]``."""
    width = image.shape[-1]
    x1, y1, x2, y2 = target["boxes"].unbind(1)
    target = dict(target, boxes=torch.stack([width - x2, y1, width - x1, y2], dim=1))
    if "masks" in target:
        target["masks"] = target["masks"].flip(-1)
    return image.flip(-1), target


def resize(
    image: torch.Tensor, target: Target, height: int, width: int
) -> tuple[torch.Tensor, Target]:
    """Resize to ``height x width`` (bilinear, antialiased); boxes scale, masks use nearest."""
    old_h, old_w = image.shape[-2:]
    if (old_h, old_w) == (height, width):
        return image, target
    image = TF.resize(image, [height, width], antialias=True)
    sx, sy = width / old_w, height / old_h
    target = dict(target)
    target["boxes"] = target["boxes"] * torch.tensor([sx, sy, sx, sy], dtype=torch.float32)
    if "area" in target:
        target["area"] = target["area"] * (sx * sy)
    if "masks" in target:
        target["masks"] = resize_masks(target["masks"], height, width)
    return image, target


def resize_masks(masks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Nearest-neighbour resize of bool masks ``[N, H, W]`` to ``[N, height, width]``."""
    if masks.shape[0] == 0:
        return masks.new_zeros((0, height, width))
    scaled = F.interpolate(
        masks[:, None].to(torch.uint8), size=(height, width), mode="nearest-exact"
    )
    return scaled[:, 0].bool()


def crop(
    image: torch.Tensor, target: Target, top: int, left: int, height: int, width: int
) -> tuple[torch.Tensor, Target]:
    """Crop a window; boxes are shifted and clipped to it, masks cut the same way. An object is
    dropped when its clipped box has no area or its mask is empty in the window."""
    image = image[:, top : top + height, left : left + width]
    target = dict(target)
    offset = torch.tensor([left, top, left, top], dtype=torch.float32)
    boxes = target["boxes"] - offset
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    target["boxes"] = boxes
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if "masks" in target:
        target["masks"] = target["masks"][:, top : top + height, left : left + width]
        keep &= target["masks"].flatten(1).any(1)
    if "area" in target:
        target["area"] = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for key in PER_OBJECT_KEYS:
        if key in target:
            target[key] = target[key][keep]
    return image, target


class Compose:
    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(
        self, image: torch.Tensor, target: Target, rng: random.Random
    ) -> tuple[torch.Tensor, Target]:
        for transform in self.transforms:
            image, target = transform(image, target, rng)
        return image, target


class RandomSizeCrop:
    """Crop a random window whose sides are drawn from ``[min_size, max_size]``, capped by the
    image."""

    def __init__(self, min_size: int, max_size: int) -> None:
        self.min_size, self.max_size = min_size, max_size

    def __call__(
        self, image: torch.Tensor, target: Target, rng: random.Random
    ) -> tuple[torch.Tensor, Target]:
        height, width = image.shape[-2:]
        crop_w = rng.randint(min(self.min_size, width), min(width, self.max_size))
        crop_h = rng.randint(min(self.min_size, height), min(height, self.max_size))
        top, left = rng.randint(0, height - crop_h), rng.randint(0, width - crop_w)
        return crop(image, target, top, left, crop_h, crop_w)


class Geometry:
    """A square resize to ``size`` (aspect not kept, as upstream). With ``crop_range``, upstream's
    training geometry first: a horizontal flip (p=0.5), then (p=0.5) a shorter-side resize to
    one of ``short_sides`` (aspect kept) and a :class:`RandomSizeCrop` with sides in
    ``crop_range``."""

    def __init__(
        self,
        size: int,
        short_sides: Sequence[int] = (),
        crop_range: tuple[int, int] | None = None,
    ) -> None:
        self.size, self.short_sides = size, list(short_sides)
        self.crop = RandomSizeCrop(*crop_range) if crop_range else None

    def __call__(
        self, image: torch.Tensor, target: Target, rng: random.Random
    ) -> tuple[torch.Tensor, Target]:
        if self.crop is not None:
            if rng.random() < 0.5:
                image, target = hflip(image, target)
            if rng.random() >= 0.5:  # the crop branch
                height, width = image.shape[-2:]
                scale = rng.choice(self.short_sides) / min(height, width)
                new_size = max(1, round(height * scale)), max(1, round(width * scale))
                image, target = self.crop(*resize(image, target, *new_size), rng)
        return resize(image, target, self.size, self.size)


class NormalizeBoxes:
    """The last transform of every pipeline: pixel xyxy boxes to normalised cxcywh, and
    ``target["size"]`` int64 ``[2]`` ``(h, w)``; the image stays uint8."""

    def __call__(
        self, image: torch.Tensor, target: Target, rng: random.Random
    ) -> tuple[torch.Tensor, Target]:
        height, width = image.shape[-2:]
        target = dict(target)
        target["boxes"] = box_xyxy_to_cxcywh(target["boxes"]) / torch.tensor(
            [width, height, width, height], dtype=torch.float32
        )
        target["size"] = torch.tensor([height, width], dtype=torch.int64)
        return image, target


def multi_scale_sizes(resolution: int, multiple: int, expanded: bool = False) -> list[int]:
    """Square training sizes around ``resolution``, each a multiple of ``multiple``.

    ``multiple`` is patch size x windows (32 for N/S/M/L). Offsets -3..+4 multiples (-5..+5
    when ``expanded``) around ``resolution // multiple``; sizes below ``2 * multiple`` are dropped.
    Example: ``multi_scale_sizes(384, 32)`` -> ``[288, 320, ..., 512]``.
    """
    if resolution <= 0 or multiple <= 0:
        raise ValueError(f"resolution and multiple must be positive (got {resolution}, {multiple})")
    base = resolution // multiple
    offsets = range(-5, 6) if expanded else range(-3, 5)
    return [(base + k) * multiple for k in offsets if (base + k) * multiple >= 2 * multiple]


def build_transforms(
    train: bool,
    resolution: int,
    train_size: int | None = None,
    crop_short_sides: Sequence[int] = (400, 500, 600),
    crop_range: tuple[int, int] = (384, 600),
) -> Compose:
    """The upstream recipe: the training :class:`Geometry` (to ``train_size``, default
    ``resolution``) or a square resize to ``resolution``, then :class:`NormalizeBoxes`."""
    if not train:
        return Compose([Geometry(resolution), NormalizeBoxes()])
    geometry = Geometry(train_size or resolution, crop_short_sides, crop_range)
    return Compose([geometry, NormalizeBoxes()])


def pick_step_size(sizes: Sequence[int], step: int, seed: int = 0) -> int:
    """The multi-scale size for optimizer step ``step``: random, but the same for a given seed."""
    return random.Random(seed * 1_000_003 + step).choice(list(sizes))


def resize_batch(
    images: torch.Tensor, targets: list[Target], size: int
) -> tuple[torch.Tensor, list[Target]]:
    """Resize a normalised float batch ``[B, 3, H, W]`` to ``[B, 3, size, size]`` (bilinear) for
    multi-scale training; normalised boxes stay, masks are resized (nearest), ``size`` updated."""
    if images.shape[-2:] == (size, size):
        return images, targets
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    resized = []
    for target in targets:
        target = dict(target)
        if "masks" in target:
            target["masks"] = resize_masks(target["masks"], size, size)
        target["size"] = torch.tensor([size, size], dtype=torch.int64, device=images.device)
        resized.append(target)
    return images, resized
