"""``rfdetr eval`` and ``rfdetr.evaluate``: success, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import rfdetr
from rfdetr.api import RFDETRModel
from rfdetr.cli import main
from rfdetr.evaluation import EvaluationError


@pytest.fixture
def dataset(tmp_path: Path, helpers) -> Path:
    """A COCO detection folder with train and valid splits (no test split)."""
    return helpers.write_coco_dataset(tmp_path / "data", {"train": 1, "valid": 2})


def _one_line_error(capsys: pytest.CaptureFixture[str], *words: str) -> None:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith("rfdetr eval: error: ")
    for word in words:
        assert word in err, err


def test_evaluation_cli_writes_report(tmp_path, dataset, helpers, capsys) -> None:
    checkpoint = helpers.save_tiny_checkpoint(tmp_path / "tiny.pth")
    out = tmp_path / "out"
    argv = ["eval", "--weights", str(checkpoint), "--dataset-dir", str(dataset)]
    code = main([*argv, "--output-dir", str(out), "--device", "cpu", "--samples", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "box: mAP50:95" in printed and "mask:" not in printed
    assert f"report: {out}/report.html" in printed
    assert {p.name for p in out.iterdir()} >= {"metrics.json", "report.md", "report.html"}
    assert json.loads((out / "metrics.json").read_text())["segm"] is None
    assert main([*argv, "--json", "--backend", "pycocotools"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["backend"] == "pycocotools" and data["iou_type"] == "bbox"


def test_evaluation_cli_missing_split(tmp_path, dataset, helpers, capsys) -> None:
    checkpoint = helpers.save_tiny_checkpoint(tmp_path / "tiny.pth")
    argv = ["eval", "--weights", str(checkpoint), "--dataset-dir", str(dataset)]
    assert main([*argv, "--split", "test"]) == 2
    _one_line_error(capsys, "no test split")


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["cat", "dog", "bird"], "the model has 3 classes but"),
        (["dog", "cat"], "class 0 is 'dog' in the model but 'cat' in"),
    ],
)
def test_evaluation_cli_classes_must_match(
    tmp_path, dataset, helpers, capsys, names, expected
) -> None:
    checkpoint = helpers.save_tiny_checkpoint(tmp_path / "other.pth", class_names=names)
    code = main(["eval", "--weights", str(checkpoint), "--dataset-dir", str(dataset)])
    assert code == 2
    _one_line_error(capsys, expected, str(checkpoint))


def test_evaluation_cli_bad_checkpoint_and_folder(tmp_path, dataset, capsys) -> None:
    missing = tmp_path / "missing.pth"
    assert main(["eval", "--weights", str(missing), "--dataset-dir", str(dataset)]) == 2
    _one_line_error(capsys, str(missing))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    assert main(["eval", "--weights", str(garbage), "--dataset-dir", str(dataset)]) == 2
    _one_line_error(capsys, str(garbage))


def test_evaluation_cli_output_dir_that_is_a_file_fails_before_predicting(
    tmp_path, dataset, helpers, capsys, monkeypatch
) -> None:
    """An ``--output-dir`` that names a file is refused before the split is predicted (hours on
    a large set), in one line naming it; it used to fail only when writing the report."""
    checkpoint = helpers.save_tiny_checkpoint(tmp_path / "tiny.pth")
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    predicted: list[object] = []
    monkeypatch.setattr(
        "rfdetr.evaluation.predictions.predict_dataset", lambda *a, **k: predicted.append(a)
    )
    argv = ["eval", "--weights", str(checkpoint), "--dataset-dir", str(dataset)]
    assert main([*argv, "--output-dir", str(taken), "--device", "cpu"]) == 2
    _one_line_error(capsys, str(taken))
    assert predicted == [] and taken.read_text() == "mine"


def test_evaluation_cli_size_needed_when_not_recorded(tmp_path, dataset, helpers, capsys) -> None:
    checkpoint = helpers.save_tiny_checkpoint(tmp_path / "custom.pth", name="custom")
    argv = ["eval", "--weights", str(checkpoint), "--dataset-dir", str(dataset)]
    assert main(argv) == 2
    _one_line_error(capsys, "does not record its model size", "--size")
    assert main([*argv, "--size", "tiny", "--device", "cpu"]) == 0


def test_evaluation_evaluate_accepts_a_model(dataset) -> None:
    """A model built in Python; its placeholder class names are not compared, only the count."""
    model = RFDETRModel(pretrain_weights=None, size="tiny", num_classes=2, device="cpu")
    result = rfdetr.evaluate(model, dataset, backend="pycocotools")
    assert [c.name for c in result.per_class] == ["cat", "dog"]
    assert result.segm is None and result.num_images == 2
    wrong = RFDETRModel(pretrain_weights=None, size="tiny", num_classes=3, device="cpu")
    with pytest.raises(EvaluationError, match="the model has 3 classes but"):
        rfdetr.evaluate(wrong, dataset)


def test_evaluation_yolo_folder_reports_yolo_ids(tmp_path, helpers) -> None:
    """YOLO class ids are the dataset ids; names come from data.yaml ({0: cat, 3: dog})."""
    from PIL import Image

    root = tmp_path / "yolo"
    root.mkdir()
    (root / "data.yaml").write_text("names: {0: cat, 3: dog}\n")
    for split in ("train", "valid"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (64, 48), (90, 90, 90)).save(root / split / "images" / f"{i}.png")
            (root / split / "labels" / f"{i}.txt").write_text(
                "0 0.3 0.3 0.2 0.2\n3 0.7 0.6 0.3 0.4\n"
            )
    checkpoint = helpers.save_tiny_checkpoint(tmp_path / "tiny.pth")
    result = rfdetr.evaluate(checkpoint, root, device="cpu", backend="pycocotools")
    assert [(c.category_id, c.name, c.num_gt) for c in result.per_class] == [
        (0, "cat", 2),
        (3, "dog", 2),
    ]
