"""Object storage over the S3 API (MinIO, SeaweedFS, AWS S3) with verified transfers.

Optional: needs the ``pipeline`` extra (the ``minio`` client), which is imported only when a
connection is made, so ``import rfdetr`` and ``import rfdetr.storage`` never pull it in.

>>> from rfdetr import storage
>>> manifest = storage.upload_dir("runs/exp1/publish", "s3://models/rfdetr-nano/v3")
>>> storage.download_prefix("s3://datasets/coco-tiny", "data/coco-tiny")

URIs are ``s3://bucket/prefix`` or ``minio://bucket/prefix`` (:func:`parse_uri`). The endpoint and
credentials come only from environment variables named like Kubeflow Pipelines' own
(``OBJECTSTORECONFIG_HOST`` / ``_PORT`` / ``_SECURE``, ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``, ...; see :mod:`rfdetr.storage.config`). What each transfer verifies is
described in :mod:`rfdetr.storage.upload` and :mod:`rfdetr.storage.download`; manifests in
:mod:`rfdetr.storage.manifest`.
"""

from __future__ import annotations

from rfdetr.storage.config import ObjectStore, config_from_env
from rfdetr.storage.download import (
    download_file,
    download_prefix,
    exists,
    read_bytes,
    read_manifest,
)
from rfdetr.storage.errors import (
    BucketNotFoundError,
    IntegrityError,
    InvalidURIError,
    ObjectNotFoundError,
    StorageAuthError,
    StorageConfigError,
    StorageError,
    StorageServerError,
    StorageUnavailableError,
    UnsafeKeyError,
)
from rfdetr.storage.manifest import (
    MANIFEST_NAME,
    build_manifest,
    verify_manifest,
    write_manifest,
)
from rfdetr.storage.upload import (
    ensure_bucket,
    upload_bytes,
    upload_dir,
    upload_file,
)
from rfdetr.storage.uris import ObjectURI, is_object_uri, parse_uri, safe_relative_path

__all__ = [
    "MANIFEST_NAME",
    "BucketNotFoundError",
    "IntegrityError",
    "InvalidURIError",
    "ObjectNotFoundError",
    "ObjectStore",
    "ObjectURI",
    "StorageAuthError",
    "StorageConfigError",
    "StorageError",
    "StorageServerError",
    "StorageUnavailableError",
    "UnsafeKeyError",
    "build_manifest",
    "config_from_env",
    "download_file",
    "download_prefix",
    "ensure_bucket",
    "exists",
    "is_object_uri",
    "parse_uri",
    "read_bytes",
    "read_manifest",
    "safe_relative_path",
    "upload_bytes",
    "upload_dir",
    "upload_file",
    "verify_manifest",
    "write_manifest",
]
