"""The weights a pipeline run fine-tunes from, read from the weights mirror in the object store
(``$RFDETR_WEIGHTS_URI``; from the internet only with ``$RFDETR_WEIGHTS_BASE_URL``), MD5-checked
either way (docs/deploy.md, "Weights mirror")."""

from __future__ import annotations

import http.client
import logging
import os
from pathlib import Path

from pipelines.steps.common import StepError
from rfdetr.hub import (
    PRETRAINED,
    WEIGHTS_BASE_URL_ENV,
    PretrainedAsset,
    download_verified,
    find_pretrained,
    md5_of,
)
from rfdetr.hub import mirror_url as base_url_of  # $RFDETR_WEIGHTS_BASE_URL/<file>, or None
from rfdetr.storage import download_file, is_object_uri, parse_uri
from rfdetr.storage.errors import BucketNotFoundError, ObjectNotFoundError

logger = logging.getLogger(__name__)

DEFAULT_WEIGHTS_URI = "s3://mlpipeline/rfdetr-weights"
WEIGHTS_URI_ENV = "RFDETR_WEIGHTS_URI"
RANDOM_INIT = frozenset({"random", "none"})


def weights_prefix() -> str:
    """Where official checkpoints are mirrored: ``$RFDETR_WEIGHTS_URI`` or the default."""
    return os.environ.get(WEIGHTS_URI_ENV) or DEFAULT_WEIGHTS_URI


def mirror_command(asset: PretrainedAsset) -> str:
    return f"rfdetr-pipeline weights mirror --size {asset.name}"


def pipeline_weights(value: str | None, model_size: str) -> str | None:
    """The run config's ``train.pretrain_weights`` for the pipeline parameter ``value``: empty,
    the official file of ``model_size`` (None for a size without one, logged); ``random`` or
    ``none`` (any case), None (random initialisation); anything else unchanged."""
    if not value:
        asset = PRETRAINED.get(model_size)
        if asset is None:
            logger.info("%s has no official COCO weights: training starts from random", model_size)
            return None
        return asset.filename
    return None if value.strip().lower() in RANDOM_INIT else value


def resolve_weights(value: str | None, scratch: Path) -> str | None:
    """A local file for ``train.pretrain_weights`` (None: random initialisation): an object URI
    downloaded, a path, or an official name (``nano``, ``rf-detr-nano.pth``) from the mirror.

    Raises:
        StepError: an official checkpoint neither mirrored nor downloadable (one line naming the
            mirror command), a bad MD5, or a value that is none of the above.
    """
    if not value:
        return None
    if is_object_uri(value):
        local = scratch / parse_uri(value).name
        download_file(value, local)
        return str(local)
    if Path(value).expanduser().is_file():
        return str(Path(value).expanduser())
    asset = find_pretrained(value)
    if asset is None:
        known = ", ".join(PRETRAINED)
        raise StepError(
            f"pretrain_weights={value!r}: not an s3:// URI, a file in the image, nor an official "
            f"name ({known}); pass pretrain_weights=random for random initialisation"
        )
    return str(_official(asset, scratch / asset.filename))


def _official(asset: PretrainedAsset, local: Path) -> Path:
    source = parse_uri(weights_prefix()).child(asset.filename)
    try:
        download_file(source, local)
    except (ObjectNotFoundError, BucketNotFoundError):
        url = base_url_of(asset)
        if url is None:
            raise StepError(
                f"the official {asset.name} weights are not in the object store ({source}): run "
                f"`{mirror_command(asset)}` once, set {WEIGHTS_BASE_URL_ENV} to download them, "
                "or pass pretrain_weights=random"
            ) from None
        try:
            download_verified(url, local, md5=asset.md5)
        except (OSError, http.client.HTTPException, ValueError) as err:
            raise StepError(f"could not get the {asset.name} weights from {url}: {err}") from None
        logger.info("pretrained %s weights from %s (MD5 verified)", asset.name, url)
        return local
    digest = md5_of(local)
    if digest != asset.md5:
        raise StepError(
            f"{source}: MD5 {digest} is not the official {asset.md5}; seed it again with "
            f"`{mirror_command(asset)}`"
        )
    logger.info("pretrained %s weights from %s (MD5 verified)", asset.name, source)
    return local
