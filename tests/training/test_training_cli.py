"""``rfdetr train``: options, ``--config``, exit codes and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from training_helpers import tiny_options

from rfdetr.cli import main
from rfdetr.config import RunConfig


def test_training_cli_trains_from_a_config_file_with_overrides(
    shapes_yolo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = RunConfig.from_kwargs("tiny", **tiny_options(shapes_yolo, tmp_path / "from_file"))
    path = config.to_file(tmp_path / "run.yaml")
    code = main(["train", "--config", str(path), "--epochs", "1", "--no-use-ema"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs_completed"] == 1 and Path(summary["best_checkpoint"]).is_file()
    saved = RunConfig.from_file(tmp_path / "from_file" / "run.yaml")
    assert saved.train.epochs == 1 and saved.train.use_ema is False
    assert saved.model == config.model.with_overrides(num_classes=3)
    last = torch.load(tmp_path / "from_file" / "checkpoint.pth", weights_only=True)
    assert last["ema"] is None


def test_training_cli_options_without_a_config_file(
    shapes_coco: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["train", str(shapes_coco), "--model", "tiny", "--epochs", "1", "--batch-size", "2"]
    argv += ["--grad-accum-steps", "1", "--num-workers", "0", "--no-multi-scale"]
    argv += ["--output-dir", str(out), "--device", "cpu", "--no-tensorboard", "--no-run-test"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["epochs_completed"] == 1
    assert (out / "checkpoint_best_total.pth").is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--epochs", "0"], "train.epochs: Input should be greater than or equal to 1"),
        (["--model", "tinyy"], "unknown model size 'tinyy'"),
        (["--dataset-file", "yolo"], "dataset_file='yolo' but the folder is a COCO dataset"),
    ],
)
def test_training_cli_bad_input_exits_2_with_one_line(
    shapes_coco: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    argv = ["train", str(shapes_coco), "--output-dir", str(tmp_path / "o"), *extra]
    if "--model" not in extra:
        argv += ["--model", "tiny"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_training_cli_typo_in_an_option_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "data", "--epoch", "3"]) == 2
    assert "unrecognized arguments: --epoch" in capsys.readouterr().err


def test_training_cli_typo_in_the_config_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model: tiny\ndata: {dataset_dir: d}\ntrain: {lr_shceduler: cosine}\n")
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "run.yaml: train: unknown TrainConfig option 'lr_shceduler'" in err
    assert "did you mean 'lr_scheduler'?" in err


@pytest.mark.parametrize("finished_an_epoch", [True, False])
def test_training_cli_ctrl_c_names_the_file_to_resume_from(
    shapes_coco: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    finished_an_epoch: bool,
) -> None:
    """Ctrl-C (Python's SIGINT handler raises KeyboardInterrupt inside `fit`) exits 130 with
    one line: the run's own ``checkpoint.pth`` to resume from, or that there is none yet."""
    out = tmp_path / "out"

    def interrupted_fit(config: RunConfig, **_: object) -> None:
        if finished_an_epoch:
            out.mkdir()
            (out / "checkpoint.pth").write_bytes(b"")
        raise KeyboardInterrupt

    monkeypatch.setattr("rfdetr.training.loop.fit", interrupted_fit)
    argv = ["train", str(shapes_coco), "--model", "tiny", "--output-dir", str(out)]
    assert main(argv) == 130
    err = capsys.readouterr().err.strip()
    hint = f"resume with --resume {out / 'checkpoint.pth'}" if finished_an_epoch else "nothing to"
    assert err.startswith(f"rfdetr train: interrupted; {hint}") and "\n" not in err
