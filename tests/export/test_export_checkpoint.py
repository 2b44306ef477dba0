"""``rfdetr export`` from a checkpoint file alone, and its one-line errors (exit code 2)."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rfdetr.api import RFDETRModel
from rfdetr.checkpoints import save_checkpoint
from rfdetr.cli import main
from rfdetr.coco_classes import COCO_CATEGORY_IDS, COCO_CLASS_NAMES
from rfdetr.config import RunConfig
from rfdetr.export import read_metadata, verify_onnx


@pytest.fixture(scope="module")
def checkpoint(segmenter: RFDETRModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``checkpoint_best_total.pth`` as training writes it, with a COCO-style class map."""
    class_map = {"names": ["cat", "dog", "cow"], "source_ids": [1, 2, 5], "skipped": []}
    data = {"dataset_dir": "data", "class_map": class_map}
    config = RunConfig(model=segmenter.config, data=data).model_dump(mode="json")
    path = tmp_path_factory.mktemp("run") / "checkpoint_best_total.pth"
    return save_checkpoint(
        path, segmenter.model.state_dict(), config=config, class_names=["cat", "dog", "cow"]
    )


def test_export_from_a_checkpoint_alone(
    checkpoint: Path, segmenter: RFDETRModel, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(["export", "--weights", str(checkpoint), "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    path = tmp_path / "rfdetr-tiny-seg.onnx"
    assert f"wrote {path}" in out and "OK" in out
    meta = read_metadata(path)
    assert meta.class_names == ["cat", "dog", "cow"]
    assert meta.dataset_ids == [1, 2, 5]
    assert meta.model_name == "tiny-seg" and meta.task == "segmentation"
    assert verify_onnx(path, segmenter.model).passed  # the checkpoint's weights, exactly


def test_simplify_and_static_batch_options(checkpoint: Path, tmp_path: Path) -> None:
    argv = ["export", "--weights", str(checkpoint), "--output-dir", str(tmp_path)]
    assert main([*argv, "--simplify", "--no-dynamic-batch", "--opset", "17"]) == 0
    simplified = tmp_path / "rfdetr-tiny-seg.sim.onnx"
    meta = read_metadata(simplified)
    assert meta.class_names == ["cat", "dog", "cow"] and not meta.dynamic_batch
    source = RFDETRModel.from_checkpoint(checkpoint)
    report = verify_onnx(simplified, source.model)
    assert report.passed and report.batch_sizes == (1,)


def test_size_is_read_from_the_file_or_given(checkpoint: Path, tiny: SimpleNamespace) -> None:
    assert RFDETRModel.from_checkpoint(checkpoint).config.name == "tiny-seg"
    source = RFDETRModel.from_checkpoint(checkpoint, size="tiny-seg")
    assert source.class_names == tiny.class_names


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--shape", "60", "64"], "shape 60x64 must be positive and divisible by patch_size"),
        (["--opset", "11"], "opset_version 11 is not supported"),
        (["--size", "huge"], "unknown model size 'huge'"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture, extra: list, message: str
) -> None:
    argv = ["export", "--weights", str(checkpoint), "--output-dir", str(tmp_path), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rfdetr export: error: ") and message in err
    assert "\n" not in err and "Traceback" not in err


def test_missing_checkpoint_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nope.pth"
    assert main(["export", "--weights", str(missing), "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{missing}: no such checkpoint file" in err and "\n" not in err
    assert main(["export", "--output-dir", str(tmp_path)]) == 2  # --weights is required


def test_upstream_coco_checkpoint_keeps_coco_ids(
    tiny: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """An upstream 1.4-style file (pickled Namespace args, 90-column COCO head)."""
    source = tiny.detector_class(pretrain_weights=None, device="cpu", num_classes=90)
    args = argparse.Namespace(class_names=COCO_CLASS_NAMES, num_queries=10, group_detr=2)
    weights = tmp_path / "coco.pth"
    torch.save({"model": source.model.state_dict(), "args": args}, weights)
    argv = ["export", "--weights", str(weights), "--output-dir", str(tmp_path / "out")]
    assert main(argv) == 2  # nothing in the file names the size
    assert "does not record its model size; pass it" in capsys.readouterr().err
    assert main([*argv, "--size", "tiny", "--no-verify"]) == 0
    meta = read_metadata(tmp_path / "out" / "rfdetr-tiny.onnx")
    assert meta.class_names == COCO_CLASS_NAMES
    assert meta.dataset_ids == meta.logit_columns == list(COCO_CATEGORY_IDS)
