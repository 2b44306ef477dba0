"""The whole pipeline through kfp.local (SubprocessRunner, this interpreter) on a tiny dataset
read from a real SeaweedFS, ending with published objects checked against their manifest."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from pathlib import Path

import pytest
from pipeline_helpers import TINY_PARAMS

from pipelines.cli import main
from pipelines.local import LocalRunError, local_arguments, run_local
from rfdetr import storage

STEPS = {
    "resolve_config",
    "fetch_dataset",
    "validate_dataset",
    "train",
    "select_checkpoint",
    "evaluate",
    "export_onnx",
    "publish",
}


def _pushed_steps(gateway: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{gateway}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        s.labels["step"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "rfdetr_step_success" and s.labels.get("pipeline") == "rfdetr-training"
    }


def test_pipeline_runs_end_to_end_with_kfp_local(
    shapes: Path,
    bucket: str,
    tmp_path: Path,
    pushgateway: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    storage.upload_dir(shapes, f"s3://{bucket}/datasets/shapes")
    monkeypatch.setenv("PUSHGATEWAY_URL", pushgateway)
    params = {
        **TINY_PARAMS,
        "dataset_uri": f"s3://{bucket}/datasets/shapes",
        "publish_bucket": bucket,
        "model_name": "shapes-tiny",
        "model_version": "v1",
    }
    run = run_local(
        params, pipeline_root=tmp_path / "runs", log_path=tmp_path / "run.log", console=None
    )
    assert run.tasks == [
        "resolve-config",
        "fetch-dataset",
        "validate-dataset",
        "train",
        "select-checkpoint",
        *run.tasks[5:7],
        "publish",
    ]
    assert set(run.tasks[5:7]) == {"evaluate", "export-onnx"}
    assert run.checkpoint.name == "checkpoint_best_total.pth"
    assert run.onnx_file.name == "rfdetr-tiny.onnx"
    assert (run.report / "report.html").is_file() and 0 <= run.map_50_95 <= 1
    assert run.published_uri == f"s3://{bucket}/shapes-tiny/v1"
    # every published object is what the manifest says
    manifest = storage.read_manifest(run.published_uri)
    assert {
        "checkpoint_best_total.pth",
        "rfdetr-tiny.onnx",
        "metrics.json",
        "report.html",
        "model.json",
    } <= {e.path for e in manifest.files}
    client = storage.ObjectStore.from_env().client
    listed = {o.object_name for o in client.list_objects(bucket, "shapes-tiny/v1/", recursive=True)}
    assert listed == {f"shapes-tiny/v1/{e.path}" for e in manifest.files} | {
        "shapes-tiny/v1/manifest.json"
    }
    for entry in manifest.files:
        data = storage.read_bytes(f"{run.published_uri}/{entry.path}")
        assert hashlib.sha256(data).hexdigest() == entry.sha256
    # the published checkpoint is the selected one, byte for byte
    published = storage.read_bytes(f"{run.published_uri}/checkpoint_best_total.pth")
    assert published == run.checkpoint.read_bytes()
    card = json.loads(storage.read_bytes(f"{run.published_uri}/model.json"))
    assert card["map_50_95"] == pytest.approx(run.map_50_95)
    # each step pushed its metrics, from its own subprocess
    assert _pushed_steps(pushgateway) == dict.fromkeys(STEPS, 1.0)


def test_pipeline_failing_validation_stops_the_run_with_the_report(
    broken_shapes: Path, bucket: str, tmp_path: Path
) -> None:
    storage.upload_dir(broken_shapes, f"s3://{bucket}/broken")
    params = {**TINY_PARAMS, "dataset_uri": f"s3://{bucket}/broken", "publish_bucket": bucket}
    with pytest.raises(LocalRunError) as failed:
        run_local(
            params, pipeline_root=tmp_path / "runs", log_path=tmp_path / "run.log", console=None
        )
    error = failed.value
    assert error.task == "validate-dataset"
    message = str(error)
    assert message.startswith(f"validate_dataset: dataset s3://{bucket}/broken is not usable")
    assert f"s3://{bucket}/broken/train/train_00000.jpg: error: image file is missing" in message
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "fetch-dataset",
        "resolve-config",
        "validate-dataset",
    ], "no step after validation may run"
    assert not storage.exists(f"s3://{bucket}/rfdetr-tiny/latest.json")


def test_pipeline_run_local_cli_exits_2_with_the_report(
    broken_shapes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "run-local",
            str(broken_shapes),
            "--model",
            "tiny",
            "--epochs",
            "1",
            "--publish-bucket",
            "",
            "--param",
            'overrides={"num_workers": 0}',
            "--pipeline-root",
            str(tmp_path / "runs"),
            "--log",
            str(tmp_path / "run.log"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "rfdetr-pipeline run-local: error: step validate-dataset failed" in err
    assert "image file is missing" in err and "Traceback" not in err
    assert "validate_dataset: error:" in (tmp_path / "run.log").read_text()


def test_pipeline_run_local_rejects_bad_parameters_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "run-local",
            "s3://d/x",
            "--model",
            "tiny",
            "--param",
            "epoch=3",
            "--pipeline-root",
            str(tmp_path / "runs"),
        ]
    )
    assert code == 2 and "epoch" in capsys.readouterr().err
    code = main(
        [
            "run-local",
            "s3://d/x",
            "--model",
            "tiny",
            "--param",
            'overrides={"train.epoch": 3}',
            "--pipeline-root",
            str(tmp_path / "runs"),
        ]
    )
    assert code == 2
    assert "did you mean 'train.epochs'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_pipeline_local_arguments_fill_unset_knobs_from_the_preset() -> None:
    args = local_arguments({"dataset_uri": "s3://d/x", "model_size": "tiny", "epochs": 3})
    assert args["epochs"] == 3
    assert args["resolution"] == 64  # tiny's
    assert args["use_ema"] is True and args["early_stopping"] is False
    assert args["overrides"] == {} and args["checkpoint_mirror_uri"] == ""
    assert None not in args.values()
