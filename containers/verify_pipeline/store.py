"""The S3 store of the run (SeaweedFS on 127.0.0.1), the dataset in it, and plain S3 reads."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .common import DATASET_BUCKET, KFP_BUCKET, MODEL_BUCKET, SPLITS, STORE_VARS, SetupError

if TYPE_CHECKING:
    from minio import Minio


@dataclass(frozen=True)
class Store:
    """The running S3 store: endpoint and keys (in memory only)."""

    host: str
    port: int
    access_key: str
    secret_key: str

    def client(self) -> Minio:
        """A plain S3 client (no project code), for the independent checks."""
        from minio import Minio

        return Minio(
            f"{self.host}:{self.port}",
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
        )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _clear_store_vars() -> None:
    for name in [n for n in os.environ if n.startswith(STORE_VARS)]:
        del os.environ[name]


@contextlib.contextmanager
def object_store(data_dir: Path) -> Iterator[Store]:
    """SeaweedFS on 127.0.0.1 with fresh keys and the buckets the run uses; stopped at the end.

    The keys are generated here and handed to SeaweedFS through its environment (so no
    ``credentials.json`` is written); this process's object-store variables point at it.
    """
    from pipelines import seaweedfs

    _clear_store_vars()  # this run's store and keys, never the caller's
    access, secret = "verify-" + secrets.token_hex(6), secrets.token_urlsafe(30)
    os.environ.update(AWS_ACCESS_KEY_ID=access, AWS_SECRET_ACCESS_KEY=secret)
    port = free_port()
    try:
        info = seaweedfs.start(
            data_dir, port, (KFP_BUCKET, DATASET_BUCKET, MODEL_BUCKET), tied=True
        )
    except seaweedfs.ObjectStoreServerError as exc:
        raise SetupError(f"SeaweedFS: {exc}") from None
    os.environ.update(
        OBJECTSTORECONFIG_HOST=seaweedfs.HOST,
        OBJECTSTORECONFIG_PORT=str(info.port),
        OBJECTSTORECONFIG_SECURE="false",
    )
    try:
        yield Store(seaweedfs.HOST, info.port, access, secret)
    finally:
        seaweedfs.stop(data_dir)
        _clear_store_vars()


def make_dataset(work: Path) -> tuple[Path, str]:
    """A small generated COCO dataset, uploaded with its manifest; (folder, s3 URI)."""
    from rfdetr.data.synthetic import make_shapes_dataset
    from rfdetr.storage import upload_dir

    folder = work / "shapes"
    make_shapes_dataset(folder, splits=SPLITS, image_size=64, seed=0)
    uri = f"s3://{DATASET_BUCKET}/shapes"
    upload_dir(folder, uri)
    return folder, uri


def read_object(client: Minio, bucket: str, name: str) -> bytes:
    """The object ``bucket/name``, read in full."""
    response = client.get_object(bucket, name)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def object_size(client: Minio, bucket: str, name: str) -> str:
    """The size of ``bucket/name`` for people: MB above 100 kB, else bytes."""
    size = client.stat_object(bucket, name).size or 0
    return f"{size / 1e6:.2f} MB" if size > 100_000 else f"{size} B"
