"""Verified uploads to an S3-API object store.

Each object carries its sha256 as user metadata (``x-amz-meta-sha256``) and is ``stat``-ed after
the upload: size, metadata and ETag must match. The expected ETag is computed locally (the plain
MD5, or the multipart ``md5-of-part-MD5s-N`` for the part size we upload with, see
:func:`rfdetr.storage.manifest.part_size_for`). A server whose ETag is not an MD5 (SSE-KMS,
SSE-C, some gateways) gets the object read back and its sha256 compared instead.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rfdetr.storage.config import BUCKET_HINT, ObjectStore, open_object, s3_errors
from rfdetr.storage.errors import BucketNotFoundError, IntegrityError, StorageError
from rfdetr.storage.manifest import (
    CHUNK_SIZE,
    MANIFEST_NAME,
    Manifest,
    ManifestEntry,
    digest_file,
    list_files,
    part_size_for,
)
from rfdetr.storage.traffic import record
from rfdetr.storage.uris import ObjectURI, parse_uri

logger = logging.getLogger(__name__)

SHA256_META = "sha256"  # sent as x-amz-meta-sha256
SHA256_HEADER = "x-amz-meta-sha256"


@dataclass(frozen=True)
class UploadedObject:
    """A verified upload; ``check`` is ``"etag"`` or ``"sha256-readback"``."""

    uri: str
    size: int
    sha256: str
    etag: str
    check: str


def object_uri(uri: str | ObjectURI) -> ObjectURI:
    """Parse a URI that must name an object (a key, not just a bucket)."""
    target = parse_uri(uri)
    if not target.key:
        raise StorageError(f"{target}: names a bucket, not an object; add a key (s3://bucket/key)")
    return target


def clean_etag(etag: str | None) -> str:
    """An ETag without quotes, lower-case."""
    return (etag or "").strip().strip('"').lower()


def require_bucket(store: ObjectStore, uri: ObjectURI) -> None:
    """Raise :class:`BucketNotFoundError` unless ``uri.bucket`` exists."""
    with s3_errors(store, "checking bucket of", uri):
        found = store.client.bucket_exists(uri.bucket)
    if not found:
        raise BucketNotFoundError(
            f"{uri}: bucket {uri.bucket!r} does not exist at {store.url}; create it ({BUCKET_HINT})"
        )


def ensure_bucket(bucket: str, *, store: ObjectStore | None = None) -> bool:
    """Create ``bucket`` unless it exists; returns True when it was created."""
    store = store or ObjectStore.from_env()
    uri = parse_uri(f"s3://{bucket}")
    with s3_errors(store, "creating bucket", uri):
        if store.client.bucket_exists(bucket):
            return False
        store.client.make_bucket(bucket)
    logger.info("created bucket %s at %s", bucket, store.url)
    return True


def _upload_verified(store: ObjectStore | None, path: Path, target: ObjectURI) -> UploadedObject:
    store, digest = store or ObjectStore.from_env(), digest_file(path)
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    with s3_errors(store, "uploading to", target):
        store.client.fput_object(
            target.bucket,
            target.key,
            str(path),
            content_type=content_type,
            metadata={SHA256_META: digest.sha256},
            part_size=part_size_for(digest.size),
        )
    with s3_errors(store, "checking upload of", target):
        stat = store.client.stat_object(target.bucket, target.key)
    if stat.size != digest.size:
        raise IntegrityError(f"{target}: stored size {stat.size} != uploaded {digest.size} bytes")
    stored_sha = (stat.metadata or {}).get(SHA256_HEADER)
    if stored_sha is not None and stored_sha.lower() != digest.sha256:
        raise IntegrityError(f"{target}: stored sha256 metadata does not match the uploaded file")
    etag, check = clean_etag(stat.etag), "etag"
    if etag != digest.etag:  # encrypted objects and some gateways use opaque ETags
        sha = hashlib.sha256()
        with open_object(store, target, "reading back") as response:
            for chunk in response.stream(CHUNK_SIZE):
                sha.update(chunk)
        if sha.hexdigest() != digest.sha256:
            raise IntegrityError(f"{target}: the object read back differs from the uploaded file")
        logger.info(
            "%s: ETag %s is not an MD5 of the data; verified by reading it back", target, etag
        )
        check = "sha256-readback"
    record("up", digest.size, target)
    logger.debug("uploaded %s -> %s (%d bytes, %s)", path, target, digest.size, check)
    return UploadedObject(str(target), digest.size, digest.sha256, etag, check)


def upload_file(
    path: str | os.PathLike[str], uri: str | ObjectURI, *, store: ObjectStore | None = None
) -> UploadedObject:
    """Upload one file to the object ``uri`` and verify it (see the module docstring)."""
    source, target = Path(path), object_uri(uri)
    if not source.is_file():
        raise StorageError(f"{source}: not a file")
    return _upload_verified(store, source, target)


def upload_bytes(
    data: bytes, uri: str | ObjectURI, *, store: ObjectStore | None = None
) -> UploadedObject:
    """Upload ``data`` as the object ``uri`` (through a temp file) and verify it."""
    target = object_uri(uri)
    with tempfile.TemporaryDirectory(prefix="rfdetr-upload-") as tmp:
        source = Path(tmp, target.name)
        source.write_bytes(data)
        return _upload_verified(store, source, target)


def upload_dir(
    local_dir: str | os.PathLike[str], uri: str | ObjectURI, *, store: ObjectStore | None = None
) -> Manifest:
    """Upload and verify every file under ``local_dir`` below the prefix ``uri``, then its
    :class:`Manifest` (returned), last, so its presence marks a complete upload (a top-level
    ``manifest.json`` in ``local_dir`` is replaced)."""
    root, prefix = Path(local_dir), parse_uri(uri)
    if not root.is_dir():
        raise StorageError(f"{root}: not a directory")
    files = list_files(root)
    if not files:
        raise StorageError(f"{root}: no files to upload")
    store = store or ObjectStore.from_env()
    require_bucket(store, prefix)
    entries = []
    for rel in files:
        done = _upload_verified(store, root / rel, prefix.child(rel))
        entries.append(ManifestEntry(rel, done.size, done.sha256))
    manifest = Manifest.from_entries(entries)
    upload_bytes(manifest.to_json().encode("utf-8"), prefix.child(MANIFEST_NAME), store=store)
    logger.info(
        "uploaded %d file(s), %d bytes, to %s (verified)", len(files), manifest.total_bytes, prefix
    )
    return manifest
