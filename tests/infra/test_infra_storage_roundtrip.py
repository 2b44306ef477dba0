"""Verified transfers against a real SeaweedFS server on 127.0.0.1 (see conftest.objectstore)."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import pytest

from rfdetr import storage
from rfdetr.storage import (
    BucketNotFoundError,
    IntegrityError,
    ObjectStore,
    StorageAuthError,
    StorageConfigError,
    StorageUnavailableError,
    UnsafeKeyError,
)
from rfdetr.utils.atomic import TMP_SUFFIX


def _make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "checkpoint_best_total.pth": os.urandom(70_000),
        "onnx/inference_model.onnx": os.urandom(3000),
        "report/metrics.json": json.dumps({"map_50_95": 0.41}).encode(),
        "empty.txt": b"",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_upload_dir_then_download_prefix_round_trip(tmp_path: Path, bucket: str) -> None:
    files = _make_tree(tmp_path / "src")
    manifest = storage.upload_dir(tmp_path / "src", f"s3://{bucket}/rfdetr-nano/v1")
    assert {e.path: e.sha256 for e in manifest.files} == {
        rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()
    }
    # The manifest was uploaded last, next to the files, and reads back identical.
    assert storage.read_manifest(f"s3://{bucket}/rfdetr-nano/v1") == manifest

    result = storage.download_prefix(f"minio://{bucket}/rfdetr-nano/v1/", tmp_path / "dst")
    assert set(result.files) == {*files, "manifest.json"}
    assert result.manifest == manifest
    for rel, data in files.items():
        assert (tmp_path / "dst" / rel).read_bytes() == data
    assert storage.verify_manifest(tmp_path / "dst") == manifest
    assert not list((tmp_path / "dst").rglob(f"*{TMP_SUFFIX}")), "temp files left behind"


def test_prefix_does_not_match_sibling_prefixes(tmp_path: Path, bucket: str) -> None:
    storage.upload_bytes(b"a", f"s3://{bucket}/data/x.txt")
    storage.upload_bytes(b"b", f"s3://{bucket}/data2/y.txt")
    result = storage.download_prefix(f"s3://{bucket}/data", tmp_path / "out")
    assert result.files == ("x.txt",)


def test_multipart_upload_is_verified_by_etag(tmp_path: Path, bucket: str) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(17 * 1024 * 1024))  # > 16 MiB part size: two parts
    uploaded = storage.upload_file(big, f"s3://{bucket}/big.bin")
    assert uploaded.etag.endswith("-2") and uploaded.check == "etag"
    path = storage.download_file(f"s3://{bucket}/big.bin", tmp_path / "back.bin")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == uploaded.sha256


def test_overwritten_object_is_detected_by_its_sha256_metadata(tmp_path: Path, bucket: str) -> None:
    _make_tree(tmp_path / "src")
    storage.upload_dir(tmp_path / "src", f"s3://{bucket}/m")
    store = ObjectStore.from_env()
    key = "m/onnx/inference_model.onnx"
    stale_sha = store.client.stat_object(bucket, key).metadata["x-amz-meta-sha256"]
    forged = b"tampered model"
    store.client.put_object(
        bucket, key, io.BytesIO(forged), len(forged), metadata={"sha256": stale_sha}
    )
    with pytest.raises(IntegrityError, match="sha256 metadata"):
        storage.download_prefix(f"s3://{bucket}/m", tmp_path / "dst")
    assert not (tmp_path / "dst" / "onnx" / "inference_model.onnx").exists()


def test_replaced_or_added_object_fails_the_manifest(tmp_path: Path, bucket: str) -> None:
    _make_tree(tmp_path / "src")
    storage.upload_dir(tmp_path / "src", f"s3://{bucket}/m")
    client = ObjectStore.from_env().client
    client.put_object(bucket, "m/report/metrics.json", io.BytesIO(b"{}"), 2)  # no sha256 metadata
    with pytest.raises(IntegrityError, match=r"report/metrics\.json: size 2"):
        storage.download_prefix(f"s3://{bucket}/m", tmp_path / "a")
    storage.upload_dir(tmp_path / "src", f"s3://{bucket}/m")  # republish, then inject a file
    client.put_object(bucket, "m/evil.pth", io.BytesIO(b"x"), 1)
    with pytest.raises(IntegrityError, match=r"evil\.pth: not in the manifest"):
        storage.download_prefix(f"s3://{bucket}/m", tmp_path / "b")


class _ListingWith:
    """A minio client whose listings also return ``extra`` keys (real servers normalise them)."""

    def __init__(self, client: object, extra: list[str]) -> None:
        self._client, self._extra = client, extra

    def __getattr__(self, name: str) -> object:
        return getattr(self._client, name)

    def list_objects(self, bucket: str, prefix: str = "", recursive: bool = False) -> list:
        from minio.datatypes import Object

        real = list(self._client.list_objects(bucket, prefix=prefix, recursive=recursive))
        return real + [Object(bucket, key, size=1, etag="0" * 32) for key in self._extra]


@pytest.mark.parametrize("key", ["data/../../etc/cron.d/x", "data//twice", "data/./x", "data/a/.."])
def test_download_refuses_keys_escaping_the_prefix(tmp_path: Path, bucket: str, key: str) -> None:
    storage.upload_bytes(b"ok", f"s3://{bucket}/data/good.txt")
    real = ObjectStore.from_env()
    store = ObjectStore(_ListingWith(real.client, [key]), real.url)
    with pytest.raises(UnsafeKeyError, match="refusing key"):
        storage.download_prefix(f"s3://{bucket}/data", tmp_path / "dst", store=store)
    assert not (tmp_path / "dst").exists(), "nothing may be written when a key is refused"


def test_missing_bucket_and_missing_object(tmp_path: Path, store_env: dict[str, str]) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f.txt").write_text("x")
    with pytest.raises(BucketNotFoundError, match="bucket 'no-such-bucket' does not exist"):
        storage.upload_dir(tmp_path / "src", "s3://no-such-bucket/x")
    with pytest.raises(BucketNotFoundError):
        storage.download_prefix("s3://no-such-bucket/x", tmp_path / "dst")
    with pytest.raises(storage.ObjectNotFoundError, match="no objects under"):
        storage.download_prefix("s3://mlpipeline/nothing-here", tmp_path / "dst")
    assert not storage.exists("s3://mlpipeline/nothing-here/x")
    storage.upload_bytes(b"w", "s3://mlpipeline/one/weights.pth")
    with pytest.raises(storage.ObjectNotFoundError, match="names one object: use download_file"):
        storage.download_prefix("s3://mlpipeline/one/weights.pth", tmp_path / "dst")


def test_missing_credentials_are_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, store_env: dict[str, str]
) -> None:
    monkeypatch.delenv("OBJECTSTORECONFIG_ACCESSKEY")
    monkeypatch.delenv("OBJECTSTORECONFIG_SECRETACCESSKEY")
    with pytest.raises(
        StorageConfigError, match="no object-store credentials: set OBJECTSTORECONF"
    ):
        storage.exists("s3://mlpipeline/x")


def test_wrong_secret_is_rejected(
    monkeypatch: pytest.MonkeyPatch, store_env: dict[str, str]
) -> None:
    monkeypatch.setenv("OBJECTSTORECONFIG_SECRETACCESSKEY", "not-the-secret")
    with pytest.raises(StorageAuthError, match="rejected the request"):
        storage.ensure_bucket("mlpipeline")


def test_unreachable_endpoint_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, store_env: dict[str, str], closed_port: int
) -> None:
    monkeypatch.setenv("OBJECTSTORECONFIG_PORT", str(closed_port))
    with pytest.raises(StorageUnavailableError, match="cannot reach the object store") as info:
        storage.exists("s3://mlpipeline/x")
    assert "\n" not in str(info.value)


def test_transfers_are_counted_in_the_transfer_log(
    tmp_path: Path, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rfdetr.storage.traffic import TRANSFER_LOG_ENV, read_log

    files = _make_tree(tmp_path / "src")
    log = tmp_path / "transfers.log"
    monkeypatch.setenv(TRANSFER_LOG_ENV, str(log))
    manifest = storage.upload_dir(tmp_path / "src", f"s3://{bucket}/counted")
    manifest_size = len(manifest.to_json().encode())
    up = read_log(log)
    assert up.up_objects == len(files) + 1 and up.down_objects == 0
    assert up.up_bytes == sum(len(data) for data in files.values()) + manifest_size
    storage.download_prefix(f"s3://{bucket}/counted", tmp_path / "dst", workers=3)
    both = read_log(log)
    assert (both.down_bytes, both.down_objects) == (up.up_bytes, up.up_objects)


def test_parallel_download_failure_leaves_no_partial_file(
    tmp_path: Path, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rfdetr.storage import download

    _make_tree(tmp_path / "src")
    storage.upload_dir(tmp_path / "src", f"s3://{bucket}/d")
    real = download._download_object

    def failing(store, target, dest, *args):
        if target.name == "inference_model.onnx":
            raise IntegrityError(f"{target}: simulated mismatch")
        return real(store, target, dest, *args)

    monkeypatch.setattr(download, "_download_object", failing)
    with pytest.raises(IntegrityError, match="simulated mismatch"):
        storage.download_prefix(f"s3://{bucket}/d", tmp_path / "dst", workers=4)
    leftovers = [p.name for p in (tmp_path / "dst").rglob("*") if p.name.endswith(TMP_SUFFIX)]
    assert leftovers == []


def test_download_file_checks_an_expected_sha256(tmp_path: Path, bucket: str) -> None:
    """`download_file(sha256=...)`: serving's manifest check (rfdetr/serving/model.py)."""
    data = os.urandom(5000)
    storage.upload_bytes(data, storage.parse_uri(f"s3://{bucket}/w.onnx"))
    good = hashlib.sha256(data).hexdigest()
    path = storage.download_file(f"s3://{bucket}/w.onnx", tmp_path / "ok.onnx", sha256=good)
    assert path.read_bytes() == data
    with pytest.raises(IntegrityError, match=r"w\.onnx: downloaded bytes do not match the"):
        storage.download_file(f"s3://{bucket}/w.onnx", tmp_path / "bad.onnx", sha256="0" * 64)
    assert not (tmp_path / "bad.onnx").exists()
    assert not list(tmp_path.glob(".bad.onnx.*"))  # no partial file left behind
