"""The plain functions behind the components: names, versions, the checkpoint mirror, the
local run's progress parsing, and the demo's dataset upload."""

from __future__ import annotations

import io
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from pipelines.local import _ProgressTee
from pipelines.steps.common import StepError
from pipelines.steps.config import check_conflicts
from pipelines.steps.mirror import CheckpointMirror
from pipelines.steps.publish import check_name, default_version
from rfdetr import storage


def test_pipeline_default_version_is_time_then_run_id() -> None:
    now = datetime(2026, 11, 24, 3, 4, 5, tzinfo=timezone.utc)
    assert default_version("", now) == "20261124-030405"
    assert default_version("9f1c2e7a-44b0-4c1e", now) == "20261124-030405-9f1c2e7a"
    assert check_name(default_version("run/../x"), "version")


@pytest.mark.parametrize("name", ["", "..", "a/b", "-lead", "x" * 129, "sp ace"])
def test_pipeline_publish_refuses_unsafe_names(name: str) -> None:
    with pytest.raises(StepError, match="use 1-128 letters"):
        check_name(name, "model name")


def test_pipeline_knob_and_override_must_agree() -> None:
    from rfdetr.config import ConfigError

    check_conflicts({"epochs": 5}, {"train.epochs": 5, "lr": 1e-3})  # same value: fine
    check_conflicts({"epochs": None}, {"epochs": 9})  # unset knob: the override decides
    with pytest.raises(ConfigError, match=r"resolution=64 and overrides\['model.resolution'\]"):
        check_conflicts({"resolution": 64}, {"model.resolution": 128})


def test_pipeline_user_errors_are_recognised_by_class() -> None:
    from rfdetr.config import ConfigError
    from rfdetr.errors import UserError
    from rfdetr.storage import UnsafeKeyError

    assert isinstance(ConfigError("x"), UserError) and isinstance(UnsafeKeyError("x"), UserError)
    assert isinstance(StepError("x"), UserError)
    assert not isinstance(ValueError("x"), UserError) and not isinstance(KeyError("x"), UserError)


def test_pipeline_mirror_uploads_changed_files_resume_point_last(
    tmp_path: Path, bucket: str
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in ("checkpoint.pth", "checkpoint_best_regular.pth", "log.txt", "checkpoint_3.pth"):
        (run / name).write_bytes(name.encode())
    mirror = CheckpointMirror(f"s3://{bucket}/m/run-1/train", interval=3600)
    uploaded: list[str] = []
    real_upload = storage.upload_file

    def record(path, uri, **kwargs):
        uploaded.append(Path(path).name)
        return real_upload(path, uri, **kwargs)

    import pipelines.steps.mirror as module

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module, "upload_file", record)
        assert mirror.sync(run) == 4
        assert uploaded == [
            "checkpoint_best_regular.pth",
            "log.txt",
            "checkpoint_3.pth",
            "checkpoint.pth",
        ]
        assert mirror.sync(run) == 0  # nothing changed
        (run / "log.txt").write_text("epoch 1")
        os.utime(run / "log.txt", ns=(1, 1))
        assert mirror.sync(run) == 1
    assert not list(tmp_path.glob(".mirror-*")), "the snapshot folder is removed"
    fresh = tmp_path / "new-pod"
    assert CheckpointMirror(mirror.uri.__str__(), interval=3600).restore(fresh)
    assert (fresh / "log.txt").read_text() == "epoch 1"
    assert not (fresh / "checkpoint_3.pth").exists()  # periodic copies are not restored
    mirror.finish(run)  # after success: only the resume point and the periodic copies stay
    client = storage.ObjectStore.from_env().client
    left = {o.object_name for o in client.list_objects(bucket, "m/", recursive=True)}
    assert left == {"m/run-1/train/checkpoint.pth", "m/run-1/train/checkpoint_3.pth"}
    mirror.clear()
    assert not CheckpointMirror(str(mirror.uri)).restore(tmp_path / "empty")


def test_pipeline_progress_tee_logs_everything_and_shows_steps() -> None:
    log, console = io.StringIO(), io.StringIO()
    tee = _ProgressTee(log, console)
    tee.write("\x1b[1mExecuting task \x1b[96m'train'\x1b[0m\n    epoch 0 loss 3.2\n")
    tee.write("    train: error: bad thing\n    second line\n\nTask \x1b[96m'train'\x1b[0m")
    tee.write(" finished with status \x1b[91mFAILURE\x1b[0m\n")
    assert "epoch 0 loss 3.2" in log.getvalue()
    assert console.getvalue().startswith("  train              failure ")
    assert tee.tasks == ["train"]
    assert tee.step_errors == ["train: bad thing\nsecond line"]


def test_pipeline_demo_uploads_a_dataset_folder(shapes: Path, store_env: dict) -> None:
    from pipelines.demo import DATASET_BUCKET, dataset_uri

    storage.ensure_bucket(DATASET_BUCKET)
    uri = dataset_uri(str(shapes), Path("unused"))
    assert uri == f"s3://{DATASET_BUCKET}/{shapes.name}"
    manifest = storage.read_manifest(uri)
    assert len(manifest.files) == len([p for p in shapes.rglob("*") if p.is_file()])
    assert dataset_uri("s3://elsewhere/data", Path("unused")) == "s3://elsewhere/data"
    with pytest.raises(SystemExit, match="neither a folder nor an s3:// URI"):
        dataset_uri("/no/such/folder", Path("unused"))


def test_pipeline_demo_counts_artifact_bytes_per_consumer(tmp_path: Path) -> None:
    """Each output is uploaded once; each step taking it downloads it whole (the dataset
    reference by validate, train, evaluate and export, which calibrates int8 on it; the train
    artifact by select-checkpoint only).
    Files beside the artifacts (train's work folder) are not artifacts."""
    from pipelines.demo import artifact_traffic, pipeline_spec

    sizes = {"fetch-dataset/dataset/ref.json": 100, "train/checkpoints/best.pth": 1000}
    sizes["train/checkpoints.work/checkpoint.pth"] = 50_000
    for rel, size in sizes.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x" * size)
    assert artifact_traffic(tmp_path, pipeline_spec()) == (100 + 1000, 4 * 100 + 1000)
