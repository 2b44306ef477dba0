"""Object-store URIs, key safety, manifests and environment configuration (no server needed)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from rfdetr.storage import (
    IntegrityError,
    InvalidURIError,
    ObjectURI,
    StorageConfigError,
    UnsafeKeyError,
    build_manifest,
    config_from_env,
    is_object_uri,
    parse_uri,
    safe_relative_path,
    verify_manifest,
    write_manifest,
)
from rfdetr.storage.manifest import MIB, Manifest, digest_file
from rfdetr.storage.uris import relative_key


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/prefix", ObjectURI("s3", "bucket", "prefix")),
        ("minio://mlpipeline/v2/artifacts/", ObjectURI("minio", "mlpipeline", "v2/artifacts")),
        ("S3://my.bucket-1", ObjectURI("s3", "my.bucket-1", "")),
        ("s3://bucket/", ObjectURI("s3", "bucket", "")),
    ],
)
def test_parse_uri_accepts_s3_and_minio(uri: str, expected: ObjectURI) -> None:
    assert parse_uri(uri) == expected
    assert is_object_uri(uri)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("/data/coco", "not an object-store URI"),
        ("gs://bucket/x", "unsupported scheme 'gs'"),
        ("s3:///prefix", "no bucket name"),
        ("s3://Bucket/x", "invalid bucket name"),
        ("s3://ab/x", "invalid bucket name"),
        ("s3://192.168.1.1/x", "not an IP address"),
        ("s3://bucket/a//b", "empty segment"),
        ("s3://bucket/a/../b", "'..' segment"),
        ("s3://bucket/./b", "'.' segment"),
        ("s3://bucket/x?endpoint=y", "query strings"),
        ("s3://bucket/a\\b", "backslashes"),
    ],
)
def test_parse_uri_rejects_malformed_with_one_line(uri: str, message: str) -> None:
    with pytest.raises(InvalidURIError, match=message) as info:
        parse_uri(uri)
    assert "\n" not in str(info.value)
    assert not is_object_uri(uri) or uri.startswith("s3")


def test_object_uri_child_prefix_and_str() -> None:
    root = parse_uri("s3://models/rfdetr")
    assert root.prefix == "rfdetr/"
    assert str(root.child("v1/model.onnx")) == "s3://models/rfdetr/v1/model.onnx"
    assert str(parse_uri("s3://models").child("a")) == "s3://models/a"
    with pytest.raises(UnsafeKeyError):
        root.child("../escape")


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a//b", "a/./b", "", "a/b/..", "a\x00b"])
def test_safe_relative_path_refuses_escapes(key: str) -> None:
    with pytest.raises(UnsafeKeyError, match="refusing key"):
        safe_relative_path(key)


def test_relative_key_stays_under_the_prefix() -> None:
    prefix = parse_uri("s3://bkt/data")
    assert relative_key(prefix, "data/train/img.jpg") == "train/img.jpg"
    with pytest.raises(UnsafeKeyError, match="not under the prefix"):
        relative_key(prefix, "data2/img.jpg")
    with pytest.raises(UnsafeKeyError, match=r"'\.\.' segment"):
        relative_key(prefix, "data/../secret")


def test_config_from_env_reads_kfp_style_variables() -> None:
    env = {
        "OBJECTSTORECONFIG_HOST": "minio-service.kubeflow",
        "OBJECTSTORECONFIG_PORT": "9000",
        "OBJECTSTORECONFIG_SECURE": "false",
        "AWS_ACCESS_KEY_ID": "ak",
        "AWS_SECRET_ACCESS_KEY": "sk",
        "AWS_REGION": "eu-west-1",
    }
    config = config_from_env(env)
    assert (config.endpoint, config.secure, config.region) == (
        "minio-service.kubeflow:9000",
        False,
        "eu-west-1",
    )
    assert (config.access_key, config.secret_key) == ("ak", "sk")
    assert "sk" not in repr(config)
    k8s = config_from_env(
        {"MINIO_SERVICE_SERVICE_HOST": "10.0.0.5", "MINIO_SERVICE_SERVICE_PORT": "9000",
         "OBJECTSTORECONFIG_ACCESSKEY": "a", "OBJECTSTORECONFIG_SECRETACCESSKEY": "s"}
    )  # fmt: skip
    assert k8s.endpoint == "10.0.0.5:9000" and k8s.url == "http://10.0.0.5:9000"
    tls = config_from_env(
        {"OBJECTSTORECONFIG_HOST": "https://s3.example.com", "AWS_ACCESS_KEY_ID": "a",
         "AWS_SECRET_ACCESS_KEY": "s"}
    )  # fmt: skip
    assert tls.secure and tls.endpoint == "s3.example.com"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"}, "no object-store endpoint"),
        ({"OBJECTSTORECONFIG_HOST": "h"}, "no object-store credentials"),
        ({"OBJECTSTORECONFIG_HOST": "h", "AWS_ACCESS_KEY_ID": "a"}, "AWS_SECRET_ACCESS_KEY is not"),
        ({"OBJECTSTORECONFIG_HOST": "h", "OBJECTSTORECONFIG_PORT": "x"}, "expected a TCP port"),
        (
            {"OBJECTSTORECONFIG_HOST": "h", "OBJECTSTORECONFIG_SECURE": "maybe"},
            "expected true or false",
        ),
        ({"OBJECTSTORECONFIG_HOST": "ftp://h"}, "expected host"),
    ],
)
def test_config_from_env_errors_name_the_variables(env: dict[str, str], message: str) -> None:
    with pytest.raises(StorageConfigError, match=message):
        config_from_env(env)


def test_digest_file_matches_s3_single_and_multipart_etags(tmp_path: Path) -> None:
    data = bytes(range(256)) * (5 * MIB // 256) + b"tail"
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    single = digest_file(path)
    assert single.etag == hashlib.md5(data).hexdigest()
    assert single.sha256 == hashlib.sha256(data).hexdigest() and single.size == len(data)
    parts = [data[i : i + 2 * MIB] for i in range(0, len(data), 2 * MIB)]
    expected = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    assert digest_file(path, part_size=2 * MIB).etag == f"{expected}-{len(parts)}"


def test_manifest_round_trip_and_verification(tmp_path: Path) -> None:
    (tmp_path / "run" / "onnx").mkdir(parents=True)
    (tmp_path / "run" / "weights.pth").write_bytes(b"w" * 1000)
    (tmp_path / "run" / "onnx" / "model.onnx").write_bytes(b"onnx")
    manifest = build_manifest(tmp_path / "run")
    assert [e.path for e in manifest.files] == ["onnx/model.onnx", "weights.pth"]
    write_manifest(manifest, tmp_path / "run" / "manifest.json")
    assert Manifest.from_json((tmp_path / "run" / "manifest.json").read_text(), "m") == manifest
    assert verify_manifest(tmp_path / "run") == manifest  # reads run/manifest.json
    (tmp_path / "run" / "extra.txt").write_text("x")
    with pytest.raises(IntegrityError, match=r"extra\.txt: not in the manifest"):
        verify_manifest(tmp_path / "run")
    verify_manifest(tmp_path / "run", strict=False)
    (tmp_path / "run" / "weights.pth").write_bytes(b"W" * 1000)
    with pytest.raises(IntegrityError, match=r"weights\.pth: sha256 mismatch"):
        verify_manifest(tmp_path / "run", strict=False)


def test_importing_storage_and_telemetry_pulls_no_optional_package() -> None:
    code = (
        "import sys, rfdetr.storage, pipelines.telemetry; "
        "m = pipelines.telemetry.StepMetrics('p', 's', gateway=''); m.set_epoch(1); m.push(); "
        "bad = [n for n in ('minio', 'prometheus_client', 'urllib3', 'kfp') if n in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_download_etag_check_rules(tmp_path: Path) -> None:
    from rfdetr.storage.download import _check_etag

    path = tmp_path / "obj.bin"
    data = b"x" * (3 * MIB)
    path.write_bytes(data)
    md5 = hashlib.md5(data).hexdigest()
    assert _check_etag(md5, md5, path, {}, "s3://b/k") == "etag"
    with pytest.raises(IntegrityError, match="do not match the ETag"):
        _check_etag("0" * 32, md5, path, {}, "s3://b/k")
    # SSE-KMS ETags are not MD5s of the data: only size (and sha256 metadata) can be checked.
    kms = {"x-amz-server-side-encryption": "aws:kms"}
    assert _check_etag("0" * 32, md5, path, kms, "s3://b/k") == "size"
    # Multipart: verified when a plausible part size (ours, common clients', size/N rounded up to
    # a MiB) reproduces the ETag; otherwise only the size, and sha256 metadata or manifest decide.
    assert _check_etag(digest_file(path, part_size=MIB).etag, md5, path, {}, "k") == "etag"
    odd_parts = digest_file(path, part_size=3 * MIB // 2).etag  # 1.5 MiB parts: not guessable
    assert odd_parts.endswith("-2")
    assert _check_etag(odd_parts, md5, path, {}, "k") == "size"
    big = tmp_path / "big.bin"
    big.write_bytes(b"y" * (9 * MIB))
    aws_cli = digest_file(big, part_size=8 * MIB).etag  # the AWS CLI's default part size
    assert _check_etag(aws_cli, "", big, {}, "k") == "etag"
