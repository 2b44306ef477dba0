"""The official COCO-pretrained RF-DETR weights: where they are published, cached and verified.

``RFDETRMedium()`` with no argument loads upstream's COCO-pretrained Medium checkpoint
(:func:`resolve_pretrained`). URLs, file names and MD5s are the ones upstream ``rfdetr`` 1.11.2
publishes in ``rfdetr/assets/model_weights.py``.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from rfdetr.errors import UserError, message
from rfdetr.utils.atomic import write_atomic

logger = logging.getLogger(__name__)

CACHE_DIR_ENV = "RFDETR_CACHE_DIR"
WEIGHTS_BASE_URL_ENV = "RFDETR_WEIGHTS_BASE_URL"
_CHUNK = 1 << 20


class WeightsUnavailableError(UserError, RuntimeError):
    """Pretrained weights could not be found, downloaded or verified. The message is one line."""


@dataclass(frozen=True)
class PretrainedAsset:
    """One published checkpoint: our ``name`` (``"seg-nano"``), upstream's ``filename`` (also its
    name in the cache folder), upstream's ``url`` and published ``md5`` (lower-case hex)."""

    name: str
    filename: str
    url: str
    md5: str


_GCS = "https://storage.googleapis.com/rfdetr"

# One row per published checkpoint: our name, upstream's file name, path under _GCS, MD5.
# fmt: off
_PUBLISHED = (
    ("nano", "rf-detr-nano.pth", "nano_coco/checkpoint_best_regular.pth",
     "fb6504cce7fbdc783f7a46991f07639f"),
    ("small", "rf-detr-small.pth", "small_coco/checkpoint_best_regular.pth",
     "fb37061c1af7bace359c91b723a8d5c1"),
    ("medium", "rf-detr-medium.pth", "medium_coco/checkpoint_best_regular.pth",
     "7223f764a87b863f02eb8d52bf0ce2ee"),
    ("large", "rf-detr-large-2026.pth", "rf-detr-large-2026.pth",
     "5cb72153541cbcb9aa6efa26222acc75"),
    ("base", "rf-detr-base.pth", "rf-detr-base-coco.pth",
     "b4d3ce46099eaed50626ede388caf979"),
    ("seg-nano", "rf-detr-seg-nano.pt", "rf-detr-seg-n-ft.pth",
     "9995497791d0ff1664a1d9ddee9cfd20"),
    ("seg-small", "rf-detr-seg-small.pt", "rf-detr-seg-s-ft.pth",
     "0a2a3006381d0c42853907e700eadd08"),
    ("seg-medium", "rf-detr-seg-medium.pt", "rf-detr-seg-m-ft.pth",
     "a49af1562c3719227ad43d0ca53b4c7a"),
    ("seg-large", "rf-detr-seg-large.pt", "rf-detr-seg-l-ft.pth",
     "275f7b094909544ed2841c94a677d07e"),
    ("seg-xlarge", "rf-detr-seg-xlarge.pt", "rf-detr-seg-xl-ft.pth",
     "3693b35d0eea86ebb3e0444f4a611fba"),
    ("seg-2xlarge", "rf-detr-seg-xxlarge.pt", "rf-detr-seg-2xl-ft.pth",
     "040bc3412af840fa8a47e0ff69b552ba"),
)
# fmt: on
PRETRAINED: dict[str, PretrainedAsset] = {
    name: PretrainedAsset(name, filename, f"{_GCS}/{path}", md5)
    for name, filename, path, md5 in _PUBLISHED
}
"""Our model name -> the official COCO-pretrained checkpoint of that size."""


def find_pretrained(name: str) -> PretrainedAsset | None:
    """The published checkpoint called ``name`` (our name or upstream's file name), if any."""
    by_file = (a for a in PRETRAINED.values() if a.filename == name)
    return PRETRAINED.get(name) or next(by_file, None)


def default_cache_dir() -> Path:
    """``$RFDETR_CACHE_DIR`` if set and not empty, else ``~/.cache/rfdetr`` (not created here)."""
    return Path(os.environ.get(CACHE_DIR_ENV) or "~/.cache/rfdetr").expanduser()


def resolve_pretrained(
    name_or_path: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    url_override: str | None = None,
) -> Path:
    """Turn ``pretrain_weights`` into a local, verified file: an existing file as it is; a
    published name (:data:`PRETRAINED`, or upstream's file name such as ``"rf-detr-nano.pth"``)
    from ``cache_dir`` (default :func:`default_cache_dir`) under upstream's file name, else
    downloaded there (:func:`download_verified`) from ``url_override``,
    ``$RFDETR_WEIGHTS_BASE_URL/<file name>`` or the published URL (same MD5 in every case).

    Raises:
        FileNotFoundError: Neither an existing file nor a published name.
        WeightsUnavailableError: The cached file is corrupt, or the download failed (network,
            HTTP error, checksum mismatch, disk). The message says what to pass instead.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    asset = find_pretrained(str(name_or_path))
    if asset is None:
        known = ", ".join(PRETRAINED)
        raise FileNotFoundError(
            f"pretrain_weights={str(name_or_path)!r}: no such file and not a published model name "
            f"({known}); pass an existing checkpoint path, or pretrain_weights=None for random "
            "initialisation"
        )
    target = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = target / asset.filename
    if target.is_file():
        digest = md5_of(target)
        if digest != asset.md5:
            raise WeightsUnavailableError(
                f"cached pretrained weights {target} are corrupt (MD5 {digest}, expected "
                f"{asset.md5}); delete that file to download it again, pass "
                "pretrain_weights=PATH to a good copy, or pretrain_weights=None for random "
                "initialisation"
            )
        logger.debug("using cached pretrained weights %s", target)
        return target
    url = url_override or mirror_url(asset) or asset.url
    try:
        download_verified(url, target, md5=asset.md5)
    except (OSError, http.client.HTTPException, ValueError) as err:
        if isinstance(err, urllib.error.HTTPError):
            reason = f"HTTP {err.code} {err.reason}"
        elif isinstance(err, urllib.error.URLError):
            reason = f"network error: {err.reason}"
        else:
            reason = message(err)
        raise WeightsUnavailableError(
            f"could not get the pretrained '{asset.name}' weights from {url} ({reason}); either "
            f"fetch {asset.url} yourself (MD5 {asset.md5}) and pass pretrain_weights=PATH or save "
            f"it as {target}, or pass pretrain_weights=None for random initialisation"
        ) from None
    return target


def download_verified(url: str, dest: Path, *, md5: str) -> Path:
    """Download ``url`` (``http(s)://`` or ``file://``) to ``dest`` with a progress bar, keeping it
    only if its MD5 is ``md5`` (:func:`rfdetr.utils.atomic.write_atomic`: on any failure ``dest``
    is left as it was). Raises ``OSError`` (``URLError``, ``TimeoutError``...) when the transfer
    fails, ``ValueError`` on another MD5 or an unsupported URL scheme."""

    def fill(out: BinaryIO) -> None:
        digest = hashlib.md5(usedforsecurity=False)
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https", "file"):
            raise ValueError(f"unsupported URL scheme {scheme!r} (use http, https or file)")
        with urllib.request.urlopen(url, timeout=60.0) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name)
            with bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            if total is not None and bar.n != total:
                raise OSError(f"connection closed after {bar.n} of {total} bytes")
        if digest.hexdigest() != md5.lower():
            raise ValueError(f"checksum mismatch: MD5 {digest.hexdigest()}, expected {md5.lower()}")

    logger.info("downloading %s -> %s", url, dest)
    return write_atomic(dest, fill)


def md5_of(path: Path) -> str:
    """The MD5 (hex) of the file ``path``, as upstream publishes its checksums."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def mirror_url(asset: PretrainedAsset) -> str | None:
    """``$RFDETR_WEIGHTS_BASE_URL/<asset's file name>``, or None when that variable is unset."""
    base = os.environ.get(WEIGHTS_BASE_URL_ENV)
    return f"{base.rstrip('/')}/{asset.filename}" if base else None
