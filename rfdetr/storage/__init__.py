"""Object storage over the S3 API (MinIO, SeaweedFS, AWS S3) with verified transfers.

The ``minio`` client (``pipeline`` extra) is imported only when a connection is made. URIs:
:func:`parse_uri`; the connection, from environment variables only: :mod:`rfdetr.storage.config`;
what each transfer verifies: :mod:`rfdetr.storage.upload`, :mod:`rfdetr.storage.download`.
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
from rfdetr.storage.manifest import MANIFEST_NAME, build_manifest, verify_manifest, write_manifest
from rfdetr.storage.upload import ensure_bucket, upload_bytes, upload_dir, upload_file
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
