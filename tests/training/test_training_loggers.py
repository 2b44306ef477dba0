"""TensorBoard and W&B (offline) logging, and the one-line error when a logger is missing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from rfdetr.config import LogConfig, RunConfig
from rfdetr.training import fit
from rfdetr.training import loggers as loggers_module
from rfdetr.training.loggers import LoggerUnavailableError, RunLogger, progress_bar


def test_training_tensorboard_and_wandb_offline(
    shapes_yolo: Path,
    tmp_path: Path,
    tiny_config: Callable[..., RunConfig],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("tensorboard", reason="the 'logging' extra is not installed")
    pytest.importorskip("wandb", reason="the 'logging' extra is not installed")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = tiny_config(
        shapes_yolo, tmp_path / "run", epochs=1, tensorboard=True, wandb=True, project="t"
    )
    result = fit(config)
    assert list(result.output_dir.glob("events.out.tfevents.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(result.output_dir))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "val/map_50_95", "val_ema/map_50_95"} <= set(tags)
    assert list((result.output_dir / "wandb").glob("offline-run-*"))


@pytest.mark.parametrize("option", ["tensorboard", "wandb"])
def test_training_missing_logger_fails_at_once(
    tmp_path: Path,
    tiny_config: Callable[..., RunConfig],
    monkeypatch: pytest.MonkeyPatch,
    option: str,
) -> None:
    monkeypatch.setattr(loggers_module, "_installed", lambda module: False)
    config = tiny_config(tmp_path / "no-dataset-needed", tmp_path / "run", **{option: True})
    with pytest.raises(LoggerUnavailableError, match=f"{option}=True but the '{option}' package"):
        fit(config)
    assert not (tmp_path / "run").exists()


def test_training_progress_bar_off_when_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bar = progress_bar(3, "epoch 0", enabled=None)  # pytest captures stdout: not a terminal
    bar.update()
    bar.set_postfix(loss="1.0")
    bar.close()
    assert capsys.readouterr().err == ""
    shown = progress_bar(2, "epoch 1", enabled=True)
    shown.update(2)
    shown.close()
    assert "epoch 1" in capsys.readouterr().err


def test_training_tensorboard_steps_and_epochs_never_share_a_tag(tmp_path: Path) -> None:
    """Per-step values (x = optimizer step) and epoch means (x = epoch) are separate series."""
    pytest.importorskip("tensorboard", reason="the 'logging' extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = RunLogger(tmp_path, LogConfig(tensorboard=True, wandb=False), {})
    for step in range(10, 40, 10):
        run.step(step, {"loss": 1.0 / step, "loss_ce": 0.5})
    run.epoch({"epoch": 0, "train_loss": 0.05, "train_loss_ce": 0.5})
    run.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    steps = {name: [e.step for e in events.Scalars(name)] for name in events.Tags()["scalars"]}
    assert steps["train_step/loss"] == [10, 20, 30] and steps["train_step/loss_ce"] == [10, 20, 30]
    assert steps["train/loss"] == [0] and steps["train/loss_ce"] == [0]
