"""Manifests (sha256 and size of every file of a published folder) and local file digests.

``manifest.json`` sits at the root of an uploaded prefix and is written last, so its presence means
the upload completed::

    {"format": "rfdetr-manifest", "version": 1, "created": "2026-01-01T00:00:00Z",
     "files": [{"path": "onnx/model.onnx", "size": 123, "sha256": "..."}, ...]}

Paths are ``/``-separated, relative to the prefix, sorted, and never include the manifest itself.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from rfdetr.storage.errors import IntegrityError, StorageError, UnsafeKeyError
from rfdetr.storage.uris import safe_relative_path
from rfdetr.utils.atomic import write_atomic

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "rfdetr-manifest"
MANIFEST_VERSION = 1

MIB = 1024 * 1024
PART_SIZE = 16 * MIB  # multipart part size of our uploads; fixes the expected multipart ETag
_MAX_PARTS = 10_000  # S3 limit
CHUNK_SIZE = MIB


def part_size_for(size: int) -> int:
    """The multipart part size our uploads use for a file of ``size`` bytes (whole MiB)."""
    return max(PART_SIZE, math.ceil(size / _MAX_PARTS / MIB) * MIB)


@dataclass(frozen=True)
class FileDigest:
    """Size, sha256 and the S3 ETag the file gets when uploaded with :func:`part_size_for`."""

    size: int
    sha256: str
    etag: str


def digest_file(path: str | os.PathLike[str], part_size: int | None = None) -> FileDigest:
    """Hash ``path`` in one pass: sha256, plus the MD5 (single part) or multipart ETag."""
    size = os.path.getsize(path)
    part = part_size or part_size_for(size)
    sha, part_md5 = hashlib.sha256(), hashlib.md5()
    part_digests: list[bytes] = []
    filled = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(min(CHUNK_SIZE, part - filled)):  # no read crosses a part
            sha.update(chunk)
            part_md5.update(chunk)
            filled += len(chunk)
            if filled == part:
                part_digests.append(part_md5.digest())
                part_md5, filled = hashlib.md5(), 0
    if filled or not part_digests:  # the last part, or the empty file's only one
        part_digests.append(part_md5.digest())
    etag = part_digests[0].hex()  # S3's ETag: the MD5 for one part, else md5(part MD5s)-N
    if len(part_digests) > 1:
        etag = f"{hashlib.md5(b''.join(part_digests)).hexdigest()}-{len(part_digests)}"
    return FileDigest(size, sha.hexdigest(), etag)


@dataclass(frozen=True)
class ManifestEntry:
    """One file: ``/``-separated path relative to the manifest's folder, size, sha256 (hex)."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """The files of an uploaded folder, sorted by path."""

    files: tuple[ManifestEntry, ...]
    created: str

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.files)

    def by_path(self) -> dict[str, ManifestEntry]:
        return {entry.path: entry for entry in self.files}

    def to_json(self) -> str:
        files = [asdict(entry) for entry in self.files]  # path, size, sha256
        doc = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "created": self.created}
        return json.dumps({**doc, "files": files}, indent=2) + "\n"

    @classmethod
    def from_entries(cls, entries: Iterable[ManifestEntry]) -> Manifest:
        created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return cls(tuple(sorted(entries, key=lambda e: e.path)), created)

    @classmethod
    def from_json(cls, text: str | bytes, source: str) -> Manifest:
        """Parse and validate a manifest; ``source`` names it in the one-line error."""
        try:
            doc = json.loads(text)
            if doc.get("format") != MANIFEST_FORMAT or doc.get("version") != MANIFEST_VERSION:
                raise ValueError(f"expected format {MANIFEST_FORMAT!r} version {MANIFEST_VERSION}")
            entries = []
            for item in doc["files"]:
                path, size, sha = item["path"], item["size"], item["sha256"]
                safe_relative_path(path)
                size_ok = isinstance(size, int) and size >= 0
                if not size_ok or len(sha) != 64 or not isinstance(sha, str):
                    raise ValueError(f"bad size or sha256 for {path!r}")
                entries.append(ManifestEntry(path, size, sha.lower()))
            return cls(tuple(sorted(entries, key=lambda e: e.path)), str(doc["created"]))
        except (ValueError, KeyError, TypeError, AttributeError, UnsafeKeyError) as exc:
            raise StorageError(f"{source}: not a valid {MANIFEST_NAME}: {exc}") from None


def list_files(root: Path) -> list[str]:
    """Sorted ``/``-separated paths of the files under ``root`` but the top-level manifest;
    symlinked files are followed, symlinked folders not (``os.walk``'s default)."""
    found = []
    for folder, _dirs, names in os.walk(root):
        for name in names:
            full = Path(folder, name)
            rel = full.relative_to(root).as_posix()
            if rel != MANIFEST_NAME and full.is_file():
                found.append(rel)
    return sorted(found)


def build_manifest(local_dir: str | os.PathLike[str]) -> Manifest:
    """Hash every file under ``local_dir`` into a :class:`Manifest` (nothing is written)."""
    root = Path(local_dir)
    if not root.is_dir():
        raise StorageError(f"{root}: not a directory")
    digests = {rel: digest_file(root / rel) for rel in list_files(root)}
    return Manifest.from_entries(ManifestEntry(rel, d.size, d.sha256) for rel, d in digests.items())


def read_local_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read ``path`` (a manifest file, or a folder holding ``manifest.json``)."""
    file = Path(path)
    if file.is_dir():
        file = file / MANIFEST_NAME
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise StorageError(f"{file}: cannot read the manifest: {exc.strerror or exc}") from None
    return Manifest.from_json(text, str(file))


def write_manifest(manifest: Manifest, path: str | os.PathLike[str]) -> Path:
    """Write ``manifest`` to ``path`` atomically (temp file + rename); returns the path."""
    return write_atomic(path, manifest.to_json().encode("utf-8"))


def compare_digests(
    manifest: Manifest, actual: dict[str, tuple[int, str]], where: str, strict: bool
) -> None:
    """Raise IntegrityError unless ``actual`` ({path: (size, sha256)}) matches ``manifest``
    (with ``strict``, and lists no other path)."""
    problems = []
    for entry in manifest.files:
        got = actual.get(entry.path)
        if got is None:
            problems.append(f"{entry.path}: missing")
        elif got[0] != entry.size:
            problems.append(f"{entry.path}: size {got[0]} != {entry.size}")
        elif got[1] != entry.sha256:
            problems.append(f"{entry.path}: sha256 mismatch")
    if strict:
        listed = manifest.by_path()
        problems += [
            f"{path}: not in the manifest" for path in sorted(actual) if path not in listed
        ]
    if problems:
        more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        shown = "; ".join(problems[:5]) + more
        raise IntegrityError(
            f"{where}: {len(problems)} file(s) do not match {MANIFEST_NAME}: {shown}"
        )


def verify_manifest(
    local_dir: str | os.PathLike[str], manifest: Manifest | None = None, *, strict: bool = True
) -> Manifest:
    """Check the files under ``local_dir`` against ``manifest`` (default: its ``manifest.json``)
    with :func:`compare_digests`; returns the manifest. Raises :class:`IntegrityError` naming the
    first mismatches."""
    root = Path(local_dir)
    manifest = manifest or read_local_manifest(root)
    listed = manifest.by_path()
    digests = {rel: digest_file(root / rel) for rel in list_files(root) if strict or rel in listed}
    actual = {rel: (digest.size, digest.sha256) for rel, digest in digests.items()}
    compare_digests(manifest, actual, str(root), strict)
    return manifest
