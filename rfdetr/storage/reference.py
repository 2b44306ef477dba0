"""Folders by reference: an object-store prefix pinned by the sha256 of its ``manifest.json``,
so that every step of a run downloads the same bytes (README, "Weights, data, mirrors")."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from rfdetr.storage.config import ObjectStore
from rfdetr.storage.download import (
    DEFAULT_WORKERS,
    DownloadResult,
    _download_all,
    _plan,
    read_bytes,
)
from rfdetr.storage.errors import IntegrityError, StorageError
from rfdetr.storage.manifest import MANIFEST_NAME, Manifest, ManifestEntry, compare_digests
from rfdetr.storage.uris import ObjectURI, parse_uri

REFERENCE_FORMAT = "rfdetr-prefix-reference"
UPLOAD_HINT = "upload the folder with `rfdetr-pipeline dataset upload FOLDER URI`"


@dataclass(frozen=True)
class PrefixReference:
    """A prefix, the sha256 of its manifest, and the size of what the manifest lists."""

    uri: str
    manifest_sha256: str
    files: int
    total_bytes: int

    def to_json(self) -> str:
        return json.dumps({"format": REFERENCE_FORMAT, **asdict(self)}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str) -> PrefixReference:
        """Parse :meth:`to_json`'s output; ``source`` names the file in the one-line error."""
        try:
            doc = json.loads(text)
            if doc.pop("format", None) != REFERENCE_FORMAT:
                raise ValueError(f"format is not {REFERENCE_FORMAT!r}")
            ref = cls(**doc)
            parse_uri(ref.uri)
            if len(ref.manifest_sha256) != 64:
                raise ValueError("manifest_sha256 is not a sha256")
        except (ValueError, TypeError, AttributeError, StorageError) as exc:
            raise StorageError(f"{source}: not a valid prefix reference: {exc}") from None
        return ref


def _manifest(store: ObjectStore, prefix: ObjectURI) -> tuple[Manifest, str]:
    source = prefix.child(MANIFEST_NAME)
    data = read_bytes(source, store=store)
    return Manifest.from_json(data, str(source)), hashlib.sha256(data).hexdigest()


def pin_prefix(uri: str | ObjectURI, *, store: ObjectStore | None = None) -> PrefixReference:
    """Pin the prefix ``uri``: its listing's names and sizes must match its ``manifest.json``
    (only the manifest is downloaded; :func:`download_reference` checks the bytes).

    Raises:
        StorageError: no ``manifest.json`` (one line saying how to write one), a key escaping
            the prefix, or the store refused.
        IntegrityError: a listed file is missing, has another size, or an object is not listed.
    """
    prefix, store = parse_uri(uri), store or ObjectStore.from_env()
    listed = _plan(store, prefix)  # refuses unsafe keys
    if MANIFEST_NAME not in listed:
        raise StorageError(
            f"{prefix}: no {MANIFEST_NAME}, so the data cannot be pinned and verified; "
            f"{UPLOAD_HINT}"
        )
    manifest, sha = _manifest(store, prefix)
    sizes = {rel: (size, "") for rel, size in listed.items() if rel != MANIFEST_NAME}
    expected = Manifest(tuple(ManifestEntry(e.path, e.size, "") for e in manifest.files), "")
    compare_digests(expected, sizes, str(prefix), True)
    return PrefixReference(str(prefix), sha, len(manifest.files), manifest.total_bytes)


def download_reference(
    ref: PrefixReference,
    local_dir: str | os.PathLike[str],
    *,
    store: ObjectStore | None = None,
    workers: int = DEFAULT_WORKERS,
) -> DownloadResult:
    """Download the files the pinned manifest lists into ``local_dir``, ``workers`` at a time.

    Raises:
        IntegrityError: the manifest is no longer the pinned one, or a file's size or sha256
            differs from the manifest's (checked before the file gets its name).
    """
    prefix, store, root = parse_uri(ref.uri), store or ObjectStore.from_env(), Path(local_dir)
    manifest, sha = _manifest(store, prefix)
    if sha != ref.manifest_sha256:
        raise IntegrityError(
            f"{prefix}: {MANIFEST_NAME} changed since the run pinned it (sha256 {sha[:12]}..., "
            f"pinned {ref.manifest_sha256[:12]}...); the data must not change during a run"
        )
    jobs = [(prefix.child(e.path), root / e.path, e.size, e.sha256) for e in manifest.files]
    _download_all(store, jobs, workers)  # each file checked against its size and sha256
    files = tuple(e.path for e in manifest.files)
    return DownloadResult(str(prefix), root, files, manifest.total_bytes, manifest)
