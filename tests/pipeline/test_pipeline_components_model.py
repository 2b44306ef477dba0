"""The model steps through ``.python_func``: train (and its resume on retry), select_checkpoint,
evaluate, export_onnx, publish. One tiny training run is shared by the module."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Markdown, Metrics, Model
from pipeline_helpers import TINY_PARAMS

from components import (
    evaluate,
    export_onnx,
    publish,
    resolve_config,
    select_checkpoint,
    train,
)
from pipelines.steps.dataset import REFERENCE_FILE
from pipelines.steps.train import work_folder
from rfdetr import storage
from rfdetr.storage.reference import PrefixReference
from rfdetr.training.loggers import read_log


def _config(folder: Path, dataset: Path, **changes) -> Artifact:
    out = Artifact(name="run_config", uri=str(folder / "run_config"))
    params = {**TINY_PARAMS, **changes}
    resolve_config.python_func(dataset_uri=str(dataset), run_config=out, **params)
    return out


def _train(folder: Path, config: Artifact, dataset: Path, **kwargs) -> SimpleNamespace:
    checkpoints = Model(name="checkpoints", uri=str(folder / "checkpoints"))
    metrics = Metrics(name="train_metrics", uri=str(folder / "metrics"))
    data = Dataset(name="dataset", uri=str(dataset))
    train.python_func(
        run_config=config, dataset=data, checkpoints=checkpoints, train_metrics=metrics, **kwargs
    )
    return SimpleNamespace(checkpoints=checkpoints, metrics=metrics)


@pytest.fixture(scope="module")
def run(shapes: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """resolve_config -> train -> select_checkpoint -> evaluate -> export_onnx, once."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("model-steps")
        config = _config(root, shapes)
        trained = _train(root, config, shapes)
        files_after_train = sorted(p.name for p in Path(trained.checkpoints.path).iterdir())
        model = Model(name="model", uri=str(root / "model"))
        map_valid = select_checkpoint.python_func(checkpoints=trained.checkpoints, model=model)
        outputs = {
            "eval_metrics": Metrics(name="eval_metrics", uri=str(root / "eval_metrics")),
            "confusion": ClassificationMetrics(name="confusion", uri=str(root / "confusion")),
            "html_report": HTML(name="html_report", uri=str(root / "report.html")),
            "markdown_report": Markdown(name="markdown_report", uri=str(root / "report.md")),
            "report": Artifact(name="report", uri=str(root / "report")),
        }
        map_test = evaluate.python_func(
            model=model,
            dataset=Dataset(name="dataset", uri=str(shapes)),
            run_config=config,
            **outputs,
        )
        onnx_model = Model(name="onnx_model", uri=str(root / "onnx_model"))
        export_onnx.python_func(model=model, onnx_model=onnx_model)
    finally:
        torch.set_num_threads(threads)
    return SimpleNamespace(
        root=root,
        config=config,
        trained=trained,
        files_after_train=files_after_train,
        model=model,
        map_valid=map_valid,
        map_test=map_test,
        onnx_model=onnx_model,
        **outputs,
    )


def test_pipeline_train_outputs_only_what_later_steps_use(run: SimpleNamespace) -> None:
    """The artifact (uploaded by the launcher, downloaded by select-checkpoint) holds the best
    weights and the run's record; resume and periodic checkpoints stay out of it."""
    folder = Path(run.trained.checkpoints.path)
    tensorboard = [n for n in run.files_after_train if n.startswith("events.out.tfevents.")]
    assert sorted(set(run.files_after_train) - set(tensorboard)) == [
        "checkpoint_best_ema.pth",
        "checkpoint_best_regular.pth",
        "log.txt",
        "metrics_plot.png",
        "results.json",
        "run.yaml",
    ]
    work = work_folder(folder)  # the run folder training wrote, next to the artifact
    assert (work / "checkpoint.pth").is_file() and (work / "checkpoint_best_total.pth").is_file()
    for name in ("checkpoint_best_regular.pth", "checkpoint_best_ema.pth"):
        state = torch.load(folder / name, map_location="cpu", weights_only=True)
        assert "optimizer" not in state and "model" in state
    metrics = run.trained.metrics.metadata
    assert metrics["epochs_completed"] == 1 and metrics["stopped_early"] == 0
    assert 0 <= metrics["best_map_50_95"] <= 1 and "last_train_loss" in metrics
    meta = run.trained.checkpoints.metadata
    assert meta["class_names"] == ["circle", "square", "triangle"]
    assert meta["resumed_from_epoch"] == -1


def test_pipeline_train_resumes_from_the_checkpoint_in_its_output(
    run: SimpleNamespace, shapes: Path, tmp_path: Path
) -> None:
    """A retried attempt finds the previous attempt's files in its work folder (kfp.local keeps
    it) and continues from checkpoint.pth instead of starting over."""
    shutil.copytree(work_folder(run.trained.checkpoints.path), tmp_path / "checkpoints.work")
    first = read_log(tmp_path / "checkpoints.work" / "log.txt")
    again = _train(tmp_path, _config(tmp_path, shapes, epochs=2), shapes)
    records = read_log(Path(again.checkpoints.path) / "log.txt")
    assert [r["epoch"] for r in records] == [0, 1]
    assert records[0] == first[0], "epoch 0 must not be trained again"
    assert again.checkpoints.metadata["resumed_from_epoch"] == 0
    assert again.metrics.metadata["epochs_completed"] == 2


def test_pipeline_train_mirror_lets_a_new_pod_resume(
    run: SimpleNamespace,
    shapes: Path,
    tmp_path: Path,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a cluster a retry starts in a new pod with an empty output folder: the first attempt's
    files come back from the object-store mirror."""
    import rfdetr.training.loop as loop

    real_fit = loop.fit

    def preempted_after_one_epoch(config, **kwargs):
        real_fit(config.with_overrides(epochs=1), **kwargs)
        raise RuntimeError("node preempted")

    config = _config(tmp_path, shapes, epochs=2)
    mirror = f"s3://{bucket}/mirror"
    monkeypatch.setattr(loop, "fit", preempted_after_one_epoch)
    with pytest.raises(RuntimeError, match="node preempted"):
        _train(tmp_path / "attempt1", config, shapes, checkpoint_mirror_uri=mirror, run_id="r-1")
    mirrored = {
        o.object_name
        for o in storage.ObjectStore.from_env().client.list_objects(
            bucket, "mirror/r-1/train/", recursive=True
        )
    }
    assert "mirror/r-1/train/checkpoint.pth" in mirrored
    monkeypatch.setattr(loop, "fit", real_fit)
    again = _train(
        tmp_path / "attempt2", config, shapes, checkpoint_mirror_uri=mirror, run_id="r-1"
    )
    assert again.checkpoints.metadata["resumed_from_epoch"] == 0
    assert [r["epoch"] for r in read_log(Path(again.checkpoints.path) / "log.txt")] == [0, 1]
    client = storage.ObjectStore.from_env().client
    remaining = {o.object_name for o in client.list_objects(bucket, "mirror/", recursive=True)}
    # a finished run keeps only its resume point there (what the artifact lacks)
    assert remaining == {"mirror/r-1/train/checkpoint.pth"}
    final = storage.read_bytes(f"{mirror}/r-1/train/checkpoint.pth")
    assert final == (work_folder(again.checkpoints.path) / "checkpoint.pth").read_bytes()


def test_pipeline_select_checkpoint_strips_the_best_model(run: SimpleNamespace) -> None:
    files = sorted(p.name for p in Path(run.model.path).iterdir())
    assert files == ["checkpoint_best_total.pth"]
    state = torch.load(Path(run.model.path, files[0]), map_location="cpu", weights_only=True)
    assert "optimizer" not in state and "model" in state
    meta = run.model.metadata
    assert meta["source"] in ("regular", "ema") and meta["epoch"] == 0
    assert meta["map_50_95"] == state["metrics"]["map_50_95"] == run.map_valid
    assert meta["model_size"] == "tiny" and meta["class_names"] == ["circle", "square", "triangle"]
    # the input artifact (the run folder) was not written to
    assert sorted(p.name for p in Path(run.trained.checkpoints.path).iterdir()) == (
        run.files_after_train
    )


def test_pipeline_evaluate_reports_on_the_test_split(run: SimpleNamespace) -> None:
    metrics = run.eval_metrics.metadata
    assert metrics["map_50_95"] == run.map_test and metrics["num_images"] == 2
    assert {"map_50", "map_75", "f1"} <= set(metrics)
    per_class = json.loads(Path(run.report.path, "metrics.json").read_text())["per_class"]
    keys = {c["name"]: f"ap_50_95_{c['name']}" in metrics for c in per_class}
    assert keys == {c["name"]: c["num_gt"] > 0 for c in per_class}  # no AP -1 for absent ones
    assert run.report.metadata["split"] == "test"
    specs = run.confusion.metadata["confusionMatrix"]["annotationSpecs"]
    assert [s["displayName"] for s in specs] == ["circle", "square", "triangle", "background"]
    rows = run.confusion.metadata["confusionMatrix"]["rows"]
    assert len(rows) == 4 and all(len(r["row"]) == 4 for r in rows)
    assert "<html" in Path(run.html_report.path).read_text().lower()
    assert Path(run.markdown_report.path).read_text().startswith("#")
    saved = json.loads(Path(run.report.path, "metrics.json").read_text())
    assert saved["meta"]["split"] == "test"


def test_pipeline_export_onnx_writes_a_verified_file(run: SimpleNamespace) -> None:
    from rfdetr.export import read_metadata

    (onnx_file,) = Path(run.onnx_model.path).glob("*.onnx")
    assert onnx_file.name == "rfdetr-tiny.onnx"
    meta = run.onnx_model.metadata
    assert meta["opset"] == 17 and meta["input_shape"] == [1, 3, 64, 64]
    assert meta["class_names"] == ["circle", "square", "triangle"]
    assert all(0 <= diff <= 1e-3 for diff in meta["verified_max_abs_diff"].values())
    assert read_metadata(onnx_file).class_names == meta["class_names"]


def _publish(run: SimpleNamespace, folder: Path, bucket: str, **kwargs):
    published = Artifact(name="published", uri=str(folder / "published"))
    result = publish.python_func(
        model=run.model,
        onnx_model=run.onnx_model,
        report=run.report,
        map_50_95=0.5,
        published=published,
        bucket=bucket,
        **{"model_name": "shapes", **kwargs},
    )
    return result, published


def test_pipeline_publish_uploads_verified_files_with_a_manifest(
    run: SimpleNamespace, tmp_path: Path, bucket: str
) -> None:
    result, published = _publish(run, tmp_path, bucket, version="v1", run_id="run-7")
    assert result.was_published and result.uri == f"s3://{bucket}/shapes/v1"
    manifest = storage.read_manifest(result.uri)
    paths = {e.path for e in manifest.files}
    assert {
        "checkpoint_best_total.pth",
        "rfdetr-tiny.onnx",
        "metrics.json",
        "report.html",
        "report.md",
        "model.json",
    } <= paths
    for entry in manifest.files:  # what a consumer reads matches the manifest
        data = storage.read_bytes(f"{result.uri}/{entry.path}")
        assert hashlib.sha256(data).hexdigest() == entry.sha256 and len(data) == entry.size
    card = json.loads(storage.read_bytes(f"{result.uri}/model.json"))
    assert card["map_50_95"] == 0.5 and card["run_id"] == "run-7"
    assert card["class_names"] == ["circle", "square", "triangle"]
    latest = json.loads(storage.read_bytes(f"s3://{bucket}/shapes/latest.json"))
    assert latest == {"version": "v1", "uri": result.uri, "map_50_95": 0.5}
    assert published.metadata["published"] is True
    assert (Path(published.path) / "manifest.json").is_file()
    with pytest.raises(SystemExit, match="this version is published already"):
        _publish(run, tmp_path / "again", bucket, version="v1", require_improvement=False)


def test_pipeline_publish_gates_on_min_map_and_the_published_model(
    run: SimpleNamespace, tmp_path: Path, bucket: str
) -> None:
    result, published = _publish(run, tmp_path / "a", bucket, min_map=0.9)
    assert not result.was_published and result.uri == ""
    decision = json.loads((Path(published.path) / "decision.json").read_text())
    assert decision["reason"] == "mAP50:95 0.5000 is below min_map 0.9000"
    assert not storage.exists(f"s3://{bucket}/shapes/latest.json")
    first, _ = _publish(run, tmp_path / "b", bucket, require_improvement=True)
    assert first.was_published  # nothing published yet: any model beats none
    second, out = _publish(run, tmp_path / "c", bucket, require_improvement=True)
    assert not second.was_published
    assert "does not beat the published 0.5000" in out.metadata["reason"]
    off, _ = _publish(run, tmp_path / "d", "")
    assert not off.was_published and "publishing is off" in _reason(tmp_path / "d")


def _reason(folder: Path) -> str:
    return json.loads((folder / "published" / "decision.json").read_text())["reason"]


def test_pipeline_train_runs_ddp_when_given_several_processes(
    run: SimpleNamespace, shapes: Path, tmp_path: Path
) -> None:
    """A pod with N GPUs trains with N processes (torch.distributed.run); here 2 gloo processes
    on the CPU. The step's outcome is read from the run folder rank 0 wrote."""
    from pipelines.steps.train import train_run

    outcome = train_run(run.config.path, shapes, tmp_path / "ddp", processes=2)
    assert outcome.epochs_completed == 1 and outcome.resumed_from_epoch is None
    assert outcome.class_names == ["circle", "square", "triangle"]
    assert 0 <= outcome.best["map_50_95"] <= 1
    assert (tmp_path / "ddp.work" / "checkpoint_best_total.pth").is_file()
    assert (tmp_path / "ddp" / "checkpoint_best_regular.pth").is_file()


def test_pipeline_train_default_weights_need_the_mirror(
    shapes: Path, tmp_path: Path, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nano with pretrain_weights left empty fine-tunes from the official weights: without
    them in the store the step stops at once with the command that seeds them."""
    monkeypatch.setenv("RFDETR_WEIGHTS_URI", f"s3://{bucket}/rfdetr-weights")
    monkeypatch.delenv("RFDETR_WEIGHTS_BASE_URL", raising=False)
    config = _config(tmp_path, shapes, model_size="nano")
    # a reference to data that is not there: the weights are checked before any download
    ref = PrefixReference(f"s3://{bucket}/no-data", "0" * 64, 1, 1)
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / REFERENCE_FILE).write_text(ref.to_json())
    with pytest.raises(SystemExit) as failed:
        _train(tmp_path, config, tmp_path / "ref")
    assert str(failed.value.code) == (
        f"train: error: the official nano weights are not in the object store "
        f"(s3://{bucket}/rfdetr-weights/rf-detr-nano.pth): run `rfdetr-pipeline weights "
        "mirror --size nano` once, set RFDETR_WEIGHTS_BASE_URL to download them, or pass "
        "pretrain_weights=random"
    )
