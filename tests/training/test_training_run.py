"""A 2-epoch `tiny` run on COCO and YOLO: every checkpoint file, its content, and reuse."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from training_helpers import tiny_options

from rfdetr import RFDETRNano
from rfdetr.checkpoints import read_checkpoint, select_best
from rfdetr.config import RunConfig, get_preset
from rfdetr.training import fit
from rfdetr.training.loop import TrainResult

CLASSES = ["circle", "square", "triangle"]
TRAINING_FILES = ["checkpoint.pth", "checkpoint_0.pth", "checkpoint_1.pth"]
WEIGHT_FILES = [
    "checkpoint_best_regular.pth",
    "checkpoint_best_ema.pth",
    "checkpoint_best_total.pth",
]


@pytest.fixture(scope="module")
def runs(shapes_coco: Path, shapes_yolo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One 2-epoch run per dataset format, shared by the tests of this module."""
    torch.set_num_threads(1)
    results = {}
    for name, dataset in (("coco", shapes_coco), ("yolo", shapes_yolo)):
        out = tmp_path_factory.mktemp(f"run_{name}")
        results[name] = fit(RunConfig.from_kwargs("tiny", **tiny_options(dataset, out)))
    return results


@pytest.mark.parametrize("fmt", ["coco", "yolo"])
def test_training_run_writes_every_file(runs: dict[str, TrainResult], fmt: str) -> None:
    result = runs[fmt]
    out = result.output_dir
    expected = [*TRAINING_FILES, *WEIGHT_FILES, "log.txt", "results.json", "metrics_plot.png"]
    for name in [*expected, "run.yaml"]:
        assert (out / name).is_file(), name
    assert not list(out.glob("*.tmp"))  # atomic writes leave no temporary files
    for name in TRAINING_FILES + WEIGHT_FILES:
        state = torch.load(out / name, map_location="cpu", weights_only=True)
        assert "model" in state and state["class_names"] == CLASSES
    assert result.epochs_completed == 2 and not result.stopped_early
    assert result.class_names == CLASSES and result.best_checkpoint == out / WEIGHT_FILES[2]


@pytest.mark.parametrize("fmt", ["coco", "yolo"])
def test_training_resume_checkpoint_holds_the_whole_state(
    runs: dict[str, TrainResult], fmt: str
) -> None:
    state = torch.load(runs[fmt].output_dir / "checkpoint.pth", weights_only=True)
    for key in ("model", "ema", "optimizer", "scheduler", "rng", "trackers", "config"):
        assert state[key] is not None, key
    assert state["epoch"] == 1 and state["global_step"] == 10  # 2 epochs x 5 steps (tiny split)
    assert state["ema"]["updates"] == 10
    config = RunConfig.model_validate(state["config"])  # plain data that round-trips
    source_ids = [1, 2, 3] if fmt == "coco" else [0, 1, 2]  # COCO: superclass 0 skipped
    assert config.data.class_map is not None
    assert config.data.class_map["source_ids"] == source_ids


def test_training_best_total_is_stripped_weights_with_metadata(runs: dict) -> None:
    out = runs["coco"].output_dir
    state = torch.load(out / "checkpoint_best_total.pth", weights_only=True)
    ours = {"format", "model", "config", "class_names", "epoch", "metrics"}
    upstream = {"args", "model_config"}  # what rfdetr 1.11.2 reads (no model_name: tiny is ours)
    assert set(state) == ours | upstream
    assert state["config"]["model"]["name"] == "tiny"
    assert state["config"]["model"]["num_classes"] == 3
    assert state["metrics"]["source"] in ("regular", "ema")
    assert 0.0 <= state["metrics"]["map_50_95"] <= 1.0
    loaded = read_checkpoint(out / "checkpoint_best_total.pth")
    assert loaded.format == "rfdetr" and loaded.class_names == CLASSES
    assert loaded.num_classes == 3 and loaded.epoch in (0, 1)


def test_training_best_total_loads_in_a_public_class_and_predicts(runs: dict) -> None:
    model = RFDETRNano(
        pretrain_weights=runs["coco"].output_dir / "checkpoint_best_total.pth", device="cpu"
    )
    assert model.config.encoder == "vit_windowed_toy" and model.class_names == CLASSES
    image = np.full((64, 80, 3), 120, dtype=np.uint8)
    detections = model.predict(image, threshold=0.0)
    assert len(detections) == get_preset("tiny").num_select
    assert set(detections.data["class_name"]) <= set(CLASSES)


def test_training_logs_results_and_plot(runs: dict) -> None:
    out = runs["coco"].output_dir
    records = [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    for key in ("train_loss", "lr", "val_map_50_95", "val_ema_map_50_95", "val_map_50"):
        assert all(isinstance(r[key], float) for r in records), key
    results = json.loads((out / "results.json").read_text())
    assert results["class_names"] == CLASSES and results["valid"]["bbox"]["map_50_95"] >= 0
    assert results["test"] is not None  # the COCO set has a test split
    yolo = json.loads((runs["yolo"].output_dir / "results.json").read_text())
    assert yolo["test"] is None  # no test split: skipped, not an error
    assert (out / "metrics_plot.png").read_bytes()[:4] == b"\x89PNG"


def test_training_select_best_rewrites_best_total(runs: dict, tmp_path: Path) -> None:
    out = runs["coco"].output_dir
    for name in ("checkpoint_best_regular.pth", "checkpoint_best_ema.pth"):
        (tmp_path / name).write_bytes((out / name).read_bytes())
    written = select_best(tmp_path)
    regular = torch.load(tmp_path / "checkpoint_best_regular.pth", weights_only=True)
    ema = torch.load(tmp_path / "checkpoint_best_ema.pth", weights_only=True)
    winner = ema if ema["metrics"]["map_50_95"] > regular["metrics"]["map_50_95"] else regular
    total = torch.load(written, weights_only=True)
    assert total["metrics"] == winner["metrics"] and "optimizer" not in total
    for key, value in winner["model"].items():
        assert torch.equal(total["model"][key], value)


def _tiny_public_model(num_classes: int) -> RFDETRNano:
    fields: dict[str, Any] = get_preset("tiny").model_dump()
    for key in ("name", "num_classes"):
        fields.pop(key)
    return RFDETRNano(pretrain_weights=None, device="cpu", num_classes=num_classes, **fields)


def test_training_model_train_reinitialises_head_and_predicts_after(
    shapes_coco: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = _tiny_public_model(num_classes=5)
    with caplog.at_level(logging.INFO):
        result = model.train(**tiny_options(shapes_coco, tmp_path / "out", epochs=1))
    assert "re-initialising the class head: the model has 5 classes, the dataset 3" in caplog.text
    assert model.config.num_classes == 3 and model.class_names == CLASSES
    assert model.dataset_ids == [1, 2, 3]  # the dataset's own ids (superclass 0 skipped)
    assert result.best_checkpoint is not None
    best = read_checkpoint(result.best_checkpoint)
    for key, value in best.state_dict.items():  # the instance holds the best weights
        assert torch.equal(model.model.state_dict()[key].cpu(), value)
    detections = model.predict(np.zeros((50, 70, 3), dtype=np.uint8), threshold=0.0)
    assert detections.xyxy.shape == (10, 4) and not model.model.training
    # 1 epoch: the best model is the last one, evaluated on test/ in memory (loop._summary)
    assert results_test_equals_best_file(result.output_dir)


def results_test_equals_best_file(out: Path) -> bool:
    """results.json's test metrics are those of the best checkpoint read back from its file."""
    from rfdetr.checkpoints import load_model
    from rfdetr.evaluation.coco import evaluate_model
    from rfdetr.models.postprocess import PostProcess
    from rfdetr.training.setup import build_datasets

    config = RunConfig.from_file(out / "run.yaml")
    model = load_model(out / "checkpoint_best_total.pth", config.model)[0]
    expected = evaluate_model(
        model, build_datasets(config).test, postprocess=PostProcess(config.model.num_select),
        batch_size=config.eval.eval_batch_size or config.train.batch_size,
    )  # fmt: skip
    found = json.loads((out / "results.json").read_text())["test"]
    return found == json.loads(json.dumps(expected.to_dict()))


def test_training_model_train_typo_fails_before_any_work(tmp_path: Path) -> None:
    model = _tiny_public_model(num_classes=3)
    with pytest.raises(ValueError, match="unknown training option 'epoch'; did you mean 'epochs'"):
        model.train(dataset_dir=str(tmp_path / "missing"), epoch=3)
    assert not (tmp_path / "output").exists()


def test_training_segmentation_run_selects_on_mask_map(shapes_coco: Path, tmp_path: Path) -> None:
    options = tiny_options(shapes_coco, tmp_path / "seg", epochs=1, run_test=False)
    result = fit(RunConfig.from_kwargs("tiny-seg", **options))
    metrics = result.best_metrics
    assert metrics is not None and metrics["iou_type"] == "segm"
    assert metrics["map_50_95"] == metrics["evaluation"]["segm"]["map_50_95"]
    record = result.history[0]
    assert "val_segm_map_50_95" in record and "val_ema_segm_map_50_95" in record
    model = RFDETRNano(pretrain_weights=result.best_checkpoint, device="cpu")
    detections = model.predict(np.zeros((40, 60, 3), dtype=np.uint8), threshold=0.0)
    assert detections.mask is not None and detections.mask.shape[1:] == (40, 60)


def test_training_output_dir_that_is_a_file_fails_in_one_line(
    shapes_coco: Path, tmp_path: Path
) -> None:
    """Was a raw ``FileExistsError`` from ``mkdir`` after the datasets and model were built;
    ``rfdetr train`` printed it as one line, ``model.train`` raised it with a traceback."""
    taken = tmp_path / "out"
    taken.write_text("not a folder")
    model = _tiny_public_model(num_classes=3)
    with pytest.raises(ValueError, match=f"output_dir {taken}: exists and is not a folder") as info:
        model.train(**tiny_options(shapes_coco, taken, epochs=1))
    assert "\n" not in str(info.value)
    assert taken.read_text() == "not a folder"
