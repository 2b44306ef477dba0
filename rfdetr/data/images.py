"""Image files: safe paths, header-only size reads (for validation) and decoding (for loading)."""

from __future__ import annotations

import errno
import os
import stat
import warnings
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from rfdetr.data.problems import DatasetError

if TYPE_CHECKING:
    import torch

# The suffixes YOLO-style image folders are scanned for (lower case); COCO names its files itself.
IMAGE_EXTENSIONS = frozenset(
    {".bmp", ".dng", ".jpg", ".jpeg", ".mpo", ".png", ".tif", ".tiff", ".webp"}
)
PIXEL_LIMIT_ENV = "RFDETR_MAX_IMAGE_PIXELS"
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485  # PIL's DecompressionBombWarning threshold


def unsafe_name_reason(name: str) -> str | None:
    """Why a file name from an annotation file may not be used (empty, NUL, absolute, ``..``),
    or None when it is fine."""
    if not name:
        return "empty file name"
    if "\x00" in name:
        return f"file name {name!r} contains a NUL character"
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
        return f"file name {name!r} is an absolute path; use a path relative to the split folder"
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        return f"file name {name!r} contains '..' and escapes the dataset folder"
    return None


def escapes_root(path: Path | str, root_real: str) -> bool:
    """True when ``path``, after following symlinks, lies outside ``root_real`` (a realpath):
    the one "inside the dataset" test of validation and every loader."""
    real = os.path.realpath(path)
    return real != root_real and not real.startswith(root_real + os.sep)


def check_inside(path: Path, root_real: str, what: str) -> None:
    """Raise DatasetError when ``path`` (a ``what``: "image"...) resolves outside the dataset."""
    if escapes_root(path, root_real):
        raise DatasetError(path, f"{what} is a symlink that points outside the dataset folder")


class NotRegularFileError(OSError):
    """A FIFO, device or socket where a data file was expected (refused unread)."""


def open_regular(path: Path) -> BinaryIO:
    """Open a file for reading; :class:`NotRegularFileError` (an OSError) for anything but a
    regular file. The path is checked before the open and the descriptor after it (a file
    swapped in between); ``O_NONBLOCK`` keeps that open from waiting on a FIFO."""
    if not stat.S_ISREG(os.stat(path).st_mode):  # before open: some devices act on open
        raise NotRegularFileError(errno.EINVAL, "not a regular file", str(path))
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFileError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def max_image_pixels() -> int:
    """The most pixels an image may have: ``RFDETR_MAX_IMAGE_PIXELS``, default PIL's warning
    threshold (89,478,485, about 9500x9500). Larger images are refused with a clear message
    rather than decoded into gigabytes per DataLoader worker."""
    value = os.environ.get(PIXEL_LIMIT_ENV, "")
    return int(value) if value.strip().isdigit() else DEFAULT_MAX_IMAGE_PIXELS


def check_header(image: Image.Image, path: Path) -> None:
    """Raise DatasetError when an opened image has more pixels than :func:`max_image_pixels`
    or a floating-point mode."""
    width, height = image.size
    limit = max_image_pixels()
    if width * height > limit:
        raise DatasetError(
            path,
            f"image is {width}x{height} = {width * height} pixels, more than the limit of "
            f"{limit}; shrink it or raise {PIXEL_LIMIT_ENV}",
        )
    if image.mode in ("F", "I;16F", "RGBf") or image.mode.startswith("F;"):
        raise DatasetError(
            path,
            f"floating-point image (mode {image.mode}) has no defined 8-bit scale; "
            "convert it to 8-bit RGB",
        )


def read_image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the image header, without decoding the pixels. Raises OSError
    (missing, unreadable, not a regular file, not an image), PIL's DecompressionBombError, or
    DatasetError (:func:`check_header`)."""
    with open_regular(path) as handle, Image.open(handle) as image:
        check_header(image, path)
        return image.size


def load_rgb(path: Path) -> torch.Tensor:
    """Decode an image file into uint8 ``[3, H, W]`` RGB (:func:`pil_to_uint8`), as training and
    ``--deep`` read it.

    EXIF orientation is ignored on purpose: annotation tools and upstream RF-DETR measure boxes on
    the stored pixels, and the header size that validation checks is the stored size too.

    Raises:
        DatasetError: missing (``image file not found``), not a regular file, too many pixels,
            or cannot be decoded (one line naming the file).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with open_regular(path) as handle, Image.open(handle) as image:
                check_header(image, path)
                return pil_to_uint8(image, path)
    except (OSError, Image.DecompressionBombError, SyntaxError, ValueError) as exc:
        if isinstance(exc, DatasetError):
            raise
        if isinstance(exc, FileNotFoundError):
            raise DatasetError(path, "image file not found") from exc
        # PIL reports some corrupt files as SyntaxError/ValueError rather than OSError.
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        if isinstance(exc, UnidentifiedImageError):  # PIL's text names our file object, not path
            reason = "not an image format PIL reads"
        raise DatasetError(path, f"cannot decode image ({reason})") from exc


def pil_to_uint8(image: Image.Image, path: Path | str) -> torch.Tensor:
    """A decoded PIL image as uint8 ``[3, H, W]`` RGB in the decoder's ``H, W, 3`` memory order
    (no transposing copy; torch's uint8 resize runs natively in it). 16-bit grey is scaled to
    8 bits (``v / 257``, rounded), not clipped. Raises DatasetError beyond 16 bits."""
    import torch  # here, so that validation (header reads only) never imports torch

    if image.mode.startswith("I"):  # 16/32-bit integer grey: scale, as convert() would clip
        grey = np.asarray(image).astype(np.int64)
        if grey.size and (grey.min() < 0 or grey.max() > 65535):
            raise DatasetError(path, f"integer image (mode {image.mode}) exceeds 16 bits")
        grey8 = np.round(grey / 257).astype(np.uint8)
        return torch.from_numpy(np.repeat(grey8[:, :, None], 3, axis=2)).permute(2, 0, 1)
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    width, height = rgb.size
    pixels = bytearray(rgb.tobytes())  # writable, unlike the bytes numpy would wrap
    return torch.frombuffer(pixels, dtype=torch.uint8).view(height, width, 3).permute(2, 0, 1)


def list_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """``(images, linked_dirs)`` under ``folder``, recursive and sorted; symlinked sub-folders
    are not followed (a link cycle would never end) but returned for validation to report."""
    found: list[Path] = []
    linked: list[Path] = []
    for dirpath, dirs, files in os.walk(folder, followlinks=False):
        base = Path(dirpath)
        linked.extend(base / d for d in dirs if os.path.islink(base / d))
        found.extend(base / f for f in files if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
    found.sort()
    return found, sorted(linked)
