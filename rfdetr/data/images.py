"""Image files: safe paths, header-only size reads (for validation) and decoding (for loading)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from rfdetr.data.problems import DatasetError

if TYPE_CHECKING:
    import torch

# The suffixes YOLO-style image folders are scanned for (lower case); COCO names its files itself.
IMAGE_EXTENSIONS = frozenset(
    {".bmp", ".dng", ".jpg", ".jpeg", ".mpo", ".png", ".tif", ".tiff", ".webp"}
)


def unsafe_name_reason(name: str) -> str | None:
    """Why a file name from an annotation file may not be used, or None when it is fine.

    Absolute paths (POSIX or Windows) and ``..`` components could read files outside the dataset.
    """
    if not name:
        return "empty file name"
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
        return f"file name {name!r} is an absolute path; use a path relative to the split folder"
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        return f"file name {name!r} contains '..' and escapes the dataset folder"
    return None


def escapes_root(path: Path, root_real: str) -> bool:
    """True when ``path``, after following symlinks, lies outside ``root_real`` (a realpath)."""
    real = os.path.realpath(path)
    return real != root_real and not real.startswith(root_real + os.sep)


def read_image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the image header, without decoding the pixels.

    Raises:
        OSError: missing, unreadable or not an image (``PIL.UnidentifiedImageError`` is an OSError).
        PIL.Image.DecompressionBombError: more pixels than PIL allows.
    """
    with Image.open(path) as image:
        return image.size


def load_rgb(path: Path) -> torch.Tensor:
    """Decode an image file into a uint8 tensor ``[3, H, W]`` (RGB, EXIF orientation not applied).

    EXIF orientation is ignored on purpose: annotation tools and upstream RF-DETR measure boxes on
    the stored pixels, and the header size that validation checks is the stored size too.

    Raises:
        DatasetError: the file is missing or cannot be decoded (one line naming the file).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                rgb = image.convert("RGB")
    except (OSError, Image.DecompressionBombError, SyntaxError, ValueError) as exc:
        # PIL reports some corrupt files as SyntaxError/ValueError rather than OSError.
        raise DatasetError(path, f"cannot decode image ({exc})") from exc
    import torch  # here, so that validation (header reads only) never imports torch

    array = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def list_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """Image files under ``folder`` (recursively, sorted, by suffix, case-insensitive).

    Returns:
        ``(images, linked_dirs)``: symlinked sub-folders are not followed (a link cycle would never
        end); they are returned so validation can report them.
    """
    found: list[Path] = []
    linked: list[Path] = []
    for dirpath, dirs, files in os.walk(folder, followlinks=False):
        base = Path(dirpath)
        linked.extend(base / d for d in dirs if os.path.islink(base / d))
        found.extend(base / f for f in files if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
    found.sort()
    return found, sorted(linked)
