"""The weights a run fine-tunes from: the default (official COCO weights from the object-store
mirror), the random-init opt-in, ``weights mirror`` and the missing-mirror error, against a
real SeaweedFS. A small fake file stands in for the official checkpoint: its MD5 is registered
by replacing the table entry in the test only (the production check is unchanged)."""

from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path

import pytest
from kfp.dsl import Artifact

from components import resolve_config
from pipelines.cli import main
from pipelines.steps.common import StepError
from pipelines.steps.weights import WEIGHTS_URI_ENV, pipeline_weights, resolve_weights
from rfdetr import hub, storage
from rfdetr.config import RunConfig

FAKE = b"official nano weights stand-in " * 100


@pytest.fixture
def fake_nano(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake file, registered as the official nano checkpoint (test-only table entry)."""
    real = hub.PRETRAINED["nano"]
    fake = hub.PretrainedAsset("nano", real.filename, real.url, hashlib.md5(FAKE).hexdigest())
    monkeypatch.setitem(hub.PRETRAINED, "nano", fake)
    monkeypatch.delenv(hub.WEIGHTS_BASE_URL_ENV, raising=False)
    path = tmp_path / "download" / real.filename
    path.parent.mkdir()
    path.write_bytes(FAKE)
    return path


@pytest.fixture
def no_internet(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"the step tried to download {args[0]!r}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_pipeline_weights_default_is_the_official_checkpoint_of_the_size() -> None:
    assert pipeline_weights("", "nano") == "rf-detr-nano.pth"
    assert pipeline_weights(None, "seg-large") == hub.PRETRAINED["seg-large"].filename
    assert pipeline_weights("", "tiny") is None  # no official weights: random, logged
    for value in ("random", "none", "RANDOM", " None "):
        assert pipeline_weights(value, "nano") is None
    assert pipeline_weights("s3://w/mine.pth", "nano") == "s3://w/mine.pth"


@pytest.mark.parametrize(("given", "expected"), [("", "rf-detr-medium.pth"), ("random", None)])
def test_pipeline_resolve_config_records_the_weights(artifact, given, expected) -> None:
    out = artifact(Artifact, "run_config")
    resolve_config.python_func(
        dataset_uri="s3://d/x", model_size="medium", run_config=out, pretrain_weights=given
    )
    assert RunConfig.from_file(out.path).train.pretrain_weights == expected


def test_pipeline_weights_mirror_command_checks_the_md5(
    fake_nano: Path, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"s3://{bucket}/rfdetr-weights"
    bad = tmp_path / "bad.pth"
    bad.write_bytes(FAKE + b"!")
    assert main(["weights", "mirror", "--size", "nano", "--from-file", str(bad), "--uri", uri]) == 2
    assert "is not the official nano file's" in capsys.readouterr().err
    assert not storage.exists(f"{uri}/rf-detr-nano.pth"), "nothing uploaded"
    args = ["weights", "mirror", "--size", "nano", "--from-file", str(fake_nano), "--uri", uri]
    assert main(args) == 0
    assert storage.read_bytes(f"{uri}/rf-detr-nano.pth") == FAKE
    assert main(["weights", "mirror", "--size", "tiny", "--uri", uri]) == 2
    assert "no official weights" in capsys.readouterr().err


def test_pipeline_weights_mirror_from_url(
    fake_nano: Path, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(hub.WEIGHTS_BASE_URL_ENV, fake_nano.parent.as_uri())
    monkeypatch.setenv(WEIGHTS_URI_ENV, f"s3://{bucket}/w")
    assert main(["weights", "mirror", "--size", "nano", "--from-url"]) == 0
    assert storage.read_bytes(f"s3://{bucket}/w/rf-detr-nano.pth") == FAKE


def test_pipeline_weights_resolve_from_the_store_first(
    fake_nano: Path, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_internet
) -> None:
    monkeypatch.setenv(WEIGHTS_URI_ENV, f"s3://{bucket}/w")
    storage.upload_file(fake_nano, f"s3://{bucket}/w/rf-detr-nano.pth")
    # a base URL is set, but the mirror wins (urlopen would fail the test)
    monkeypatch.setenv(hub.WEIGHTS_BASE_URL_ENV, "https://example.invalid/weights")
    local = resolve_weights("rf-detr-nano.pth", tmp_path / "a")
    assert local is not None and Path(local).read_bytes() == FAKE
    assert resolve_weights("nano", tmp_path / "b") is not None  # our name works too
    # an explicit URI and a path are used as given; random is None
    assert Path(resolve_weights(f"s3://{bucket}/w/rf-detr-nano.pth", tmp_path)).read_bytes() == FAKE
    assert resolve_weights(str(fake_nano), tmp_path) == str(fake_nano)
    assert resolve_weights(None, tmp_path) is None


def test_pipeline_weights_mirror_with_another_md5_is_refused(
    fake_nano: Path, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(WEIGHTS_URI_ENV, f"s3://{bucket}/w")
    storage.upload_bytes(b"something else", f"s3://{bucket}/w/rf-detr-nano.pth")
    with pytest.raises(StepError, match="is not the official"):
        resolve_weights("rf-detr-nano.pth", tmp_path)


def test_pipeline_weights_base_url_only_when_the_mirror_lacks_them(
    fake_nano: Path, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(WEIGHTS_URI_ENV, f"s3://{bucket}/empty")
    monkeypatch.setenv(hub.WEIGHTS_BASE_URL_ENV, fake_nano.parent.as_uri())
    local = resolve_weights("rf-detr-nano.pth", tmp_path / "x")
    assert local is not None and Path(local).read_bytes() == FAKE


def test_pipeline_weights_missing_mirror_is_one_line_naming_the_command(
    fake_nano: Path, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_internet
) -> None:
    monkeypatch.setenv(WEIGHTS_URI_ENV, f"s3://{bucket}/rfdetr-weights")
    with pytest.raises(StepError) as failed:
        resolve_weights("rf-detr-nano.pth", tmp_path)
    message = str(failed.value)
    assert "\n" not in message
    assert f"not in the object store (s3://{bucket}/rfdetr-weights/rf-detr-nano.pth)" in message
    assert "run `rfdetr-pipeline weights mirror --size nano` once" in message
    assert "pretrain_weights=random" in message
    monkeypatch.setenv(WEIGHTS_URI_ENV, "s3://no-such-bucket-x/w")  # no bucket: the same
    with pytest.raises(StepError, match="weights mirror --size nano"):
        resolve_weights("nano", tmp_path)
    with pytest.raises(StepError, match="nor an official name"):
        resolve_weights("rf-detr-huge.pth", tmp_path)
