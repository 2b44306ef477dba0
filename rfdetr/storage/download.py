"""Verified downloads from an S3-API object store.

An object gets its name only after its size, ETag (plain MD5, or multipart when a plausible part
size reproduces it; not for encrypted objects, whose ETags are not MD5s) and ``x-amz-meta-sha256``
metadata (when present) match; a prefix's files must match its ``manifest.json`` when it has one.
Keys that would escape the target folder are refused before anything is written.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from rfdetr.storage.config import ObjectStore, open_object, s3_errors
from rfdetr.storage.errors import IntegrityError, ObjectNotFoundError, StorageError, UnsafeKeyError
from rfdetr.storage.manifest import (
    CHUNK_SIZE,
    MANIFEST_NAME,
    MIB,
    Manifest,
    compare_digests,
    digest_file,
    part_size_for,
    read_local_manifest,
)
from rfdetr.storage.traffic import record
from rfdetr.storage.upload import SHA256_HEADER, clean_etag, object_uri, require_bucket
from rfdetr.storage.uris import ObjectURI, is_object_uri, parse_uri, relative_key
from rfdetr.utils.atomic import write_atomic

logger = logging.getLogger(__name__)

_ENCRYPTION_HEADERS = (
    "x-amz-server-side-encryption-customer-algorithm",
    "x-amz-server-side-encryption-aws-kms-key-id",
)
# Part sizes other common clients use; tried to verify a multipart ETag we did not create.
_COMMON_PART_SIZES = tuple(n * MIB for n in (5, 8, 10, 15, 16, 32, 64, 100, 128))


@dataclass(frozen=True)
class DownloadResult:
    """Files written under ``local_dir`` (relative ``/`` paths) and the prefix's manifest."""

    uri: str
    local_dir: Path
    files: tuple[str, ...]
    total_bytes: int
    manifest: Manifest | None


def _multipart_matches(path: Path, etag: str) -> bool:
    """Whether a plausible part size reproduces the multipart ``etag``."""
    parts = int(etag.rsplit("-", 1)[1])
    size = path.stat().st_size
    candidates = {part_size_for(size), *_COMMON_PART_SIZES, -(-size // parts // MIB) * MIB}
    fitting = sorted(c for c in candidates if c > 0 and -(-size // c) == parts)
    return any(digest_file(path, part).etag == etag for part in fitting)


def _check_etag(etag: str, md5_hex: str, path: Path, headers: Any, where: str) -> str:
    """The check the server's ETag allowed (``etag`` or ``size``); IntegrityError on a mismatch."""
    encrypted = any(headers.get(name) for name in _ENCRYPTION_HEADERS) or (
        (headers.get("x-amz-server-side-encryption") or "").startswith("aws:kms")
    )
    if encrypted:
        return "size"  # ETags of SSE-KMS / SSE-C objects are not MD5s of the data
    if len(etag) == 32 and all(c in "0123456789abcdef" for c in etag):
        if etag != md5_hex:
            raise IntegrityError(f"{where}: downloaded bytes do not match the ETag (MD5) {etag}")
        return "etag"
    if "-" in etag and etag.rsplit("-", 1)[1].isdigit():
        if _multipart_matches(path, etag):
            return "etag"
        # Unknown part size (or an altered object): the sha256 metadata or manifest decides.
        logger.debug("%s: no known part size reproduces the multipart ETag %s", where, etag)
    return "size"


def _download_object(
    store: ObjectStore,
    target: ObjectURI,
    dest: Path,
    expected_size: int | None,
    expected_sha256: str | None = None,
) -> tuple[int, str]:
    """Stream one object to ``dest`` (:func:`write_atomic`: named only once verified); returns
    (size, sha256)."""
    if dest.is_dir():
        raise StorageError(f"{target}: cannot write {dest}: a folder is in the way")
    sha, md5, size = hashlib.sha256(), hashlib.md5(), 0

    def fill(handle: BinaryIO) -> None:
        nonlocal size
        with open_object(store, target, "downloading") as response:
            headers = response.headers
            for chunk in response.stream(CHUNK_SIZE):
                handle.write(chunk)
                sha.update(chunk)
                md5.update(chunk)
        handle.flush()
        size = handle.tell()
        if expected_size is not None and size != expected_size:
            raise IntegrityError(
                f"{target}: downloaded {size} bytes, the listing says {expected_size}"
            )
        etag = clean_etag(headers.get("ETag"))
        check = _check_etag(etag, md5.hexdigest(), Path(handle.name), headers, str(target))
        stored_sha = headers.get(SHA256_HEADER)
        if stored_sha is not None:
            if stored_sha.lower() != sha.hexdigest():
                raise IntegrityError(f"{target}: downloaded bytes do not match its sha256 metadata")
            check = "sha256"
        if expected_sha256 is not None and expected_sha256 != sha.hexdigest():
            raise IntegrityError(f"{target}: downloaded bytes do not match the manifest's sha256")
        if check == "size" and expected_sha256 is None:
            logger.info(
                "%s: ETag not verifiable and no sha256 metadata; verified the size only", target
            )

    write_atomic(dest, fill)
    record("down", size, target)
    return size, sha.hexdigest()


DEFAULT_WORKERS = 8  # the minio client's connection pool holds 10


def _download_all(
    store: ObjectStore, jobs: Sequence[tuple[ObjectURI, Path, int | None, str | None]], workers: int
) -> list[tuple[int, str]]:
    """(size, sha256) of :func:`_download_object` for each (uri, dest, size, sha256) job, in
    order, ``workers`` at a time; a failure cancels the jobs not started yet."""
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="download") as pool:
        return list(pool.map(lambda job: _download_object(store, *job), jobs))


def download_file(
    uri: str | ObjectURI,
    path: str | os.PathLike[str],
    *,
    store: ObjectStore | None = None,
    sha256: str | None = None,
) -> Path:
    """Download the object ``uri`` to ``path`` (verified, atomic); returns the path. With
    ``sha256`` (a manifest's), other bytes are an `IntegrityError` and ``path`` is not written."""
    _download_object(store or ObjectStore.from_env(), object_uri(uri), Path(path), None, sha256)
    return Path(path)


def _plan(store: ObjectStore, prefix: ObjectURI) -> dict[str, int]:
    """{relative path: size} of every object under ``prefix``, sorted, every key checked."""
    require_bucket(store, prefix)
    with s3_errors(store, "listing", prefix):
        listing = store.client.list_objects(prefix.bucket, prefix=prefix.prefix, recursive=True)
        plan = {
            relative_key(prefix, obj.object_name): int(obj.size)
            for obj in listing
            if obj.size or not obj.object_name.endswith("/")  # folder markers of some tools
        }
    for rel in plan:  # "a" and "a/b" cannot both be files
        parent = next((p for p in map(str, PurePosixPath(rel).parents) if p in plan), None)
        if parent is not None:
            raise UnsafeKeyError(f"{prefix}: key {parent!r} is both a file and a folder of {rel!r}")
    if not plan:
        single = bool(prefix.key) and exists(prefix, store=store)
        hint = "; it names one object: use download_file" if single else ""
        raise ObjectNotFoundError(f"{prefix}: no objects under this prefix at {store.url}{hint}")
    return dict(sorted(plan.items()))


def download_prefix(
    uri: str | ObjectURI,
    local_dir: str | os.PathLike[str],
    *,
    store: ObjectStore | None = None,
    workers: int = DEFAULT_WORKERS,
) -> DownloadResult:
    """Download and verify every object under the prefix ``uri`` into ``local_dir``, ``workers``
    at a time (module docstring). A file already there is replaced only by an object of its path.
    """
    prefix, store, root = parse_uri(uri), store or ObjectStore.from_env(), Path(local_dir)
    plan = _plan(store, prefix)
    root.mkdir(parents=True, exist_ok=True)
    jobs = [(prefix.child(rel), root / rel, size, None) for rel, size in plan.items()]
    digests = dict(zip(plan, _download_all(store, jobs, workers), strict=True))
    manifest = None
    if MANIFEST_NAME in digests:
        manifest = read_local_manifest(root / MANIFEST_NAME)
        files = {rel: got for rel, got in digests.items() if rel != MANIFEST_NAME}
        compare_digests(manifest, files, str(prefix), True)
    total = sum(size for size, _ in digests.values())
    args = (len(plan), total, prefix, root)
    logger.info("downloaded %d object(s), %d bytes, from %s to %s (verified)", *args)
    return DownloadResult(str(prefix), root, tuple(digests), total, manifest)


def read_bytes(
    uri: str | ObjectURI, *, store: ObjectStore | None = None, max_bytes: int = 64 * MIB
) -> bytes:
    """The content of a (small) object, verified like a download."""
    target, store = object_uri(uri), store or ObjectStore.from_env()
    with s3_errors(store, "reading", target):
        size = store.client.stat_object(target.bucket, target.key).size
    if size > max_bytes:
        raise StorageError(
            f"{target}: {size} bytes is over the {max_bytes}-byte limit of read_bytes"
        )
    with tempfile.TemporaryDirectory(prefix="rfdetr-read-") as tmp:
        dest = Path(tmp, "object")
        _download_object(store, target, dest, size)
        return dest.read_bytes()


def exists(uri: str | ObjectURI, *, store: ObjectStore | None = None) -> bool:
    """Whether the object ``uri`` exists (its bucket must exist)."""
    target, store = object_uri(uri), store or ObjectStore.from_env()
    try:
        with s3_errors(store, "checking", target):
            store.client.stat_object(target.bucket, target.key)
    except ObjectNotFoundError:
        return False
    return True


def read_manifest(source: str | os.PathLike[str], *, store: ObjectStore | None = None) -> Manifest:
    """Read a manifest from a local folder/file or from an object-store prefix or object URI."""
    if not is_object_uri(source):
        return read_local_manifest(source)
    target = parse_uri(os.fspath(source))
    if target.name != MANIFEST_NAME:
        target = target.child(MANIFEST_NAME)
    return Manifest.from_json(read_bytes(target, store=store), str(target))
