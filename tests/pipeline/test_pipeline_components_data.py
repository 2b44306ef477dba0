"""The first steps through ``.python_func``: resolve_config, fetch_dataset, validate_dataset
(artifacts in ``tmp_path``; the object store is a real SeaweedFS)."""

from __future__ import annotations

import filecmp
import hashlib
import json
import shutil
import threading
import urllib.request
from pathlib import Path

import pytest
from kfp.dsl import Artifact, Dataset, Markdown, Metrics

from components import fetch_dataset, resolve_config, validate_dataset
from pipelines.parameters import KNOBS
from pipelines.steps.dataset import REFERENCE_FILE, dataset_folder
from rfdetr import storage
from rfdetr.config import RunConfig, get_preset
from rfdetr.storage import IntegrityError, download


def _same_tree(a: Path, b: Path) -> bool:
    files_a = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files_a)


def test_pipeline_resolve_config_applies_knobs_over_the_preset(artifact) -> None:
    out = artifact(Artifact, "run_config")
    resolve_config.python_func(
        dataset_uri="s3://datasets/shapes",
        model_size="tiny",
        run_config=out,
        epochs=3,
        lr=2e-4,
        use_ema=False,
        overrides={"train.warmup_epochs": 1, "num_workers": 0},
    )
    config = RunConfig.from_file(out.path)
    preset = get_preset("tiny")
    assert (config.train.epochs, config.train.lr, config.train.use_ema) == (3, 2e-4, False)
    assert config.train.warmup_epochs == 1 and config.data.num_workers == 0
    assert config.data.dataset_dir == "s3://datasets/shapes"
    # knobs left unset keep the preset's (and the config's) own defaults
    assert config.model.resolution == preset.resolution
    assert config.train.batch_size == type(config.train)().batch_size
    assert out.metadata["model_size"] == "tiny" and out.metadata["epochs"] == 3
    assert set(out.metadata) == {"model_size", *KNOBS}  # every declared knob, as resolved
    assert out.metadata["resolution"] == preset.resolution
    assert json.loads(Path(out.path).read_text())["model"]["name"] == "tiny"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"overrides": {"train.epoch": 3}},
            "unknown option 'train.epoch'; did you mean 'train.epochs'",
        ),
        ({"epochs": 5, "overrides": {"epochs": 7}}, "epochs=5 and overrides['epochs']=7 disagree"),
        ({"resolution": 70}, "resolution 70 must be divisible by"),
        ({"model_size": "huge"}, "huge"),
        # inputs of the steps after training are checked here too, not after it (README:
        # "Bad configs and datasets fail first, in the unretried CPU steps")
        ({"quantize": "int4"}, "quantize 'int4': expected one of ('int8',)"),
        ({"min_map": 50.0}, "min_map 50.0: an mAP50:95 is a number from 0 to 1"),
        ({"model_version": "../v1"}, "model_version '../v1': use 1-128 letters"),
        ({"publish_bucket": "My_Models"}, "publish_bucket 'My_Models': not a bucket name"),
        ({"canary_traffic_percent": 150}, "canary_traffic_percent 150: expected 0 to 100"),
        ({"deploy_name": "9000"}, "deploy name '9000': cannot make a Kubernetes name of it"),
    ],
)
def test_pipeline_resolve_config_fails_fast_with_one_line(artifact, kwargs, message) -> None:
    args = {"dataset_uri": "s3://d/x", "model_size": "tiny", **kwargs}
    with pytest.raises(SystemExit) as failed:
        resolve_config.python_func(run_config=artifact(Artifact, "run_config"), **args)
    text = str(failed.value.code)
    assert text.startswith("resolve_config: error: ") and message in text
    assert "\n" not in text


def test_pipeline_fetch_dataset_passes_a_reference_not_a_copy(
    artifact, shapes, bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = storage.upload_dir(shapes, f"s3://{bucket}/shapes")
    out = artifact(Dataset, "dataset")
    fetch_dataset.python_func(dataset_uri=f"minio://{bucket}/shapes", dataset=out)
    assert [p.name for p in Path(out.path).iterdir()] == [REFERENCE_FILE]
    manifest_bytes = storage.read_bytes(f"s3://{bucket}/shapes/{storage.MANIFEST_NAME}")
    assert out.metadata["by_reference"] is True and out.metadata["manifest_verified"] is True
    assert out.metadata["manifest_sha256"] == hashlib.sha256(manifest_bytes).hexdigest()
    assert out.metadata["files"] == len(manifest.files)
    assert out.metadata["bytes"] == manifest.total_bytes
    # a reading step downloads it in parallel, every file checked against the manifest
    threads: set[str] = set()
    real = download._download_object

    def recorded(*args, **kwargs):
        threads.add(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(download, "_download_object", recorded)
    with dataset_folder(out.path) as local:
        assert _same_tree(shapes, local)
    assert not local.exists(), "the downloaded copy is removed after the step"
    # (the manifest is read on the main thread, the files on the pool's)
    assert len({name for name in threads if name.startswith("download_")}) > 1


def test_pipeline_dataset_reference_refuses_changed_data(
    artifact, shapes, bucket, tmp_path: Path
) -> None:
    storage.upload_dir(shapes, f"s3://{bucket}/shapes")
    out = artifact(Dataset, "dataset")
    fetch_dataset.python_func(dataset_uri=f"s3://{bucket}/shapes", dataset=out)
    key = f"s3://{bucket}/shapes/train/train_00000.jpg"
    original = storage.read_bytes(key)
    # same size, other bytes, behind the manifest's back: the download refuses it
    storage.upload_bytes(bytes(reversed(original)), key)
    refused = r"train_00000\.jpg: downloaded bytes do not match"
    with pytest.raises(IntegrityError, match=refused), dataset_folder(out.path):
        pass
    # another size: fetch already refuses (the listing no longer matches the manifest)
    storage.upload_bytes(b"not an image", key)
    with pytest.raises(SystemExit, match=r"fetch_dataset: error: .*do not match manifest.json"):
        fetch_dataset.python_func(
            dataset_uri=f"s3://{bucket}/shapes", dataset=artifact(Dataset, "again")
        )
    # a new version of the dataset uploaded after the run pinned it: later steps refuse it
    newer = Path(shutil.copytree(shapes, tmp_path / "v2"))
    (newer / "README.txt").write_text("v2")
    storage.upload_dir(newer, f"s3://{bucket}/shapes")
    with (
        pytest.raises(IntegrityError, match="changed since the run pinned it"),
        dataset_folder(out.path),
    ):
        pass


def test_pipeline_fetch_dataset_needs_a_manifest(artifact, bucket) -> None:
    storage.upload_bytes(b"{}", f"s3://{bucket}/bare/train/_annotations.coco.json")
    with pytest.raises(SystemExit) as failed:
        fetch_dataset.python_func(dataset_uri=f"s3://{bucket}/bare", dataset=artifact(Dataset, "d"))
    message = str(failed.value.code)
    assert message == (
        f"fetch_dataset: error: s3://{bucket}/bare: no manifest.json, so the data cannot be "
        "pinned and verified; upload the folder with `rfdetr-pipeline dataset upload FOLDER URI`"
    )


def test_pipeline_fetch_dataset_refuses_keys_escaping_the_prefix(
    artifact, bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.upload_bytes(b"ok", f"s3://{bucket}/data/train/a.txt")
    real = storage.ObjectStore.from_env()

    class Listing:  # real servers normalise such keys, so the listing is where they can appear
        def __getattr__(self, name: str) -> object:
            return getattr(real.client, name)

        def list_objects(self, bucket_name: str, prefix: str = "", recursive: bool = False):
            from minio.datatypes import Object

            found = list(real.client.list_objects(bucket_name, prefix=prefix, recursive=True))
            return [*found, Object(bucket_name, "data/../../etc/cron.d/x", size=1, etag="0" * 32)]

    store = storage.ObjectStore(Listing(), real.url)
    monkeypatch.setattr(storage.ObjectStore, "from_env", classmethod(lambda cls: store))
    out = artifact(Dataset, "dataset")
    with pytest.raises(SystemExit, match=r"refusing key '\.\./\.\./etc/cron\.d/x'"):
        fetch_dataset.python_func(dataset_uri=f"s3://{bucket}/data", dataset=out)
    assert not Path(out.path).exists(), "nothing may be written"


def test_pipeline_fetch_dataset_copies_a_local_folder(artifact, shapes) -> None:
    out = artifact(Dataset, "dataset")
    fetch_dataset.python_func(dataset_uri=str(shapes), dataset=out)
    assert _same_tree(shapes, Path(out.path))
    assert out.metadata["by_reference"] is False and out.metadata["source"] == str(shapes)
    with pytest.raises(SystemExit, match="not a folder, nor an s3:// or minio:// URI"):
        fetch_dataset.python_func(dataset_uri="/no/such/dir", dataset=artifact(Dataset, "x"))


def test_pipeline_validate_dataset_reports_counts_and_markdown(artifact, shapes) -> None:
    dataset = artifact(Dataset, "dataset", shapes, {"source": "s3://datasets/shapes"})
    report, counts = artifact(Markdown, "report"), artifact(Metrics, "counts")
    fmt = validate_dataset.python_func(dataset=dataset, report=report, counts=counts)
    assert fmt == "coco"
    assert counts.metadata["train_images"] == 8 and counts.metadata["test_images"] == 2
    assert counts.metadata["classes"] == 3 and counts.metadata["errors"] == 0
    text = Path(report.path).read_text()
    assert text.startswith("# Dataset validation: s3://datasets/shapes")
    assert "| train | 8 |" in text and "| 0 | 1 | circle |" in text


def test_pipeline_validate_dataset_markdown_escapes_dataset_strings(
    artifact, shapes, tmp_path
) -> None:
    """Class names are the dataset's: HTML or Markdown in them must reach KFP's Markdown viewer
    as text (``frontend/src/components/viewers/MarkdownViewer.tsx`` renders raw HTML)."""
    hostile = "<img src=x onerror=alert(1)>|`x`"
    copy = tmp_path / "hostile"
    shutil.copytree(shapes, copy)
    for ann_file in copy.glob("*/_annotations.coco.json"):
        data = json.loads(ann_file.read_text())
        for category in data["categories"]:
            if category["name"] == "triangle":
                category["name"] = hostile
        ann_file.write_text(json.dumps(data))
    dataset = artifact(Dataset, "dataset", copy, {"source": "s3://datasets/<b>x</b>"})
    report = artifact(Markdown, "report")
    validate_dataset.python_func(dataset=dataset, report=report, counts=artifact(Metrics, "c"))
    text = Path(report.path).read_text()
    assert "<img" not in text and "<b>" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;\\|\\`x\\`" in text


def test_pipeline_validate_dataset_fails_with_the_report(artifact, broken_shapes) -> None:
    dataset = artifact(Dataset, "dataset", broken_shapes, {"source": "s3://datasets/broken"})
    report = artifact(Markdown, "report")
    with pytest.raises(SystemExit) as failed:
        validate_dataset.python_func(
            dataset=dataset, report=report, counts=artifact(Metrics, "counts")
        )
    message = str(failed.value.code)
    assert message.startswith(
        "validate_dataset: error: dataset s3://datasets/broken is not usable: 1 error(s)"
    )
    # the report, with paths under the source URI rather than the local copy
    assert "s3://datasets/broken/train/train_00000.jpg: error: image file is missing" in message
    assert "result: NOT usable" in message and str(dataset.path) not in message
    assert "**NOT usable**" in Path(report.path).read_text()


def test_pipeline_steps_push_their_metrics(
    artifact, shapes, pushgateway: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    monkeypatch.setenv("PUSHGATEWAY_URL", pushgateway)
    dataset = artifact(Dataset, "dataset", shapes)
    validate_dataset.python_func(
        dataset=dataset, report=artifact(Markdown, "r"), counts=artifact(Metrics, "c")
    )
    with urllib.request.urlopen(f"{pushgateway}/metrics", timeout=5) as response:
        families = text_string_to_metric_families(response.read().decode())
    samples = {
        (s.name, s.labels.get("step")): s.value
        for family in families
        for s in family.samples
        if s.labels.get("pipeline") == "rfdetr-training"
    }
    assert samples[("rfdetr_step_success", "validate_dataset")] == 1
    assert samples[("rfdetr_dataset_train_images", "validate_dataset")] == 8
    assert 0 < samples[("rfdetr_step_duration_seconds", "validate_dataset")] < 60


def test_pipeline_dataset_upload_command_writes_the_manifest(
    artifact, shapes, bucket, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipelines.cli import main

    uri = f"s3://{bucket}/uploaded"
    assert main(["dataset", "upload", str(shapes), uri]) == 0
    assert "uploaded" in capsys.readouterr().out
    out = artifact(Dataset, "dataset")
    fetch_dataset.python_func(dataset_uri=uri, dataset=out)  # pinned: the manifest is there
    assert out.metadata["by_reference"] is True
    assert main(["dataset", "upload", str(tmp_path / "missing"), uri]) == 2
    assert "not a folder" in capsys.readouterr().err
