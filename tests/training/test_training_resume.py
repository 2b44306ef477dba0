"""Resume: bit-exact continuation after a kill, finished runs, early stopping, NaN losses."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from rfdetr.config import ConfigError, RunConfig
from rfdetr.models.criterion import SetCriterion
from rfdetr.training import NonFiniteLossError, fit
from rfdetr.training import step as step_module
from rfdetr.training.step import EarlyStopping

# RNG-dependent settings on purpose: drop-path draws from the global torch generator and
# multi-scale picks a size per step, so an exact match proves every random stream is restored.
RANDOM = {"drop_path": 0.1, "multi_scale": True, "lr_scheduler": "cosine"}


def _state(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel())


def test_training_resume_after_a_kill_matches_an_uninterrupted_run(
    shapes_coco: Path,
    tmp_path: Path,
    tiny_config: Callable[..., RunConfig],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    straight = fit(tiny_config(shapes_coco, tmp_path / "straight", **RANDOM))
    real_step, calls = step_module.optimizer_step, []

    def killed_in_second_epoch(*args: Any) -> dict[str, float]:
        calls.append(1)
        if len(calls) == 8:  # epoch 1, step 2 of 5
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(step_module, "optimizer_step", killed_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_config(shapes_coco, tmp_path / "resumed", **RANDOM))
    monkeypatch.setattr(step_module, "optimizer_step", real_step)
    last = tmp_path / "resumed" / "checkpoint.pth"
    assert _state(last)["epoch"] == 0  # the kill lost only the unfinished epoch
    resumed = fit(tiny_config(shapes_coco, tmp_path / "resumed", resume=str(last), **RANDOM))

    assert resumed.epochs_completed == straight.epochs_completed == 2
    a, b = _state(straight.output_dir / "checkpoint.pth"), _state(last)
    assert _max_difference(a["model"], b["model"]) <= 1e-6
    assert _max_difference(a["ema"]["module"], b["ema"]["module"]) <= 1e-6
    assert a["global_step"] == b["global_step"] == 10
    epochs = [r["epoch"] for r in resumed.history]
    assert epochs == [0, 1]  # log.txt: one line per epoch, none lost or repeated


def test_training_resume_of_a_finished_run_returns_cleanly(
    shapes_coco: Path,
    tmp_path: Path,
    tiny_config: Callable[..., RunConfig],
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = fit(tiny_config(shapes_coco, tmp_path / "run", epochs=1))
    last = first.output_dir / "checkpoint.pth"
    stamp = os.stat(last).st_mtime_ns
    with caplog.at_level(logging.WARNING):
        again = fit(tiny_config(shapes_coco, tmp_path / "run", epochs=1, resume=str(last)))
    assert again.already_finished and again.epochs_completed == 1
    assert "already finished (1 epochs completed" in caplog.text
    assert again.best_checkpoint == first.best_checkpoint
    assert os.stat(last).st_mtime_ns == stamp  # nothing rewritten
    longer = fit(tiny_config(shapes_coco, tmp_path / "run", epochs=2, resume=str(last)))
    assert not longer.already_finished and [r["epoch"] for r in longer.history] == [0, 1]


def test_training_resume_refuses_another_architecture(
    shapes_coco: Path, tmp_path: Path, tiny_config: Callable[..., RunConfig]
) -> None:
    first = fit(tiny_config(shapes_coco, tmp_path / "run", epochs=1, use_ema=False))
    assert not (first.output_dir / "checkpoint_best_ema.pth").exists()  # no EMA, no EMA file
    last = str(first.output_dir / "checkpoint.pth")
    with pytest.raises(ConfigError, match="the checkpoint's model has dec_layers=2"):
        fit(tiny_config(shapes_coco, tmp_path / "run", epochs=2, resume=last, dec_layers=3))
    best = str(first.output_dir / "checkpoint_best_total.pth")
    with pytest.raises(ValueError, match="not a resumable training checkpoint"):
        fit(tiny_config(shapes_coco, tmp_path / "run", epochs=2, resume=best))


def test_training_early_stopping_rule() -> None:
    stopper = EarlyStopping(patience=2, min_delta=0.01)
    assert not stopper.update(0.10, 0.12)  # first epoch: best = 0.12 (max of both)
    assert not stopper.update(0.125, 0.13)  # +0.01 exactly is not an improvement
    assert stopper.update(0.11, 0.11)  # second epoch without improvement: stop
    ema_only = EarlyStopping(patience=1, min_delta=0.0, use_ema=True)
    assert not ema_only.update(0.9, 0.1)
    assert not ema_only.update(0.0, 0.2)  # the regular mAP is ignored
    assert ema_only.update(1.0, 0.2)


def test_training_early_stopping_stops_the_run(
    shapes_coco: Path, tmp_path: Path, tiny_config: Callable[..., RunConfig]
) -> None:
    options = {"epochs": 6, "early_stopping": True, "early_stopping_patience": 1}
    # mAP cannot improve by more than 1.0, so the epoch after the first one stops the run.
    config = tiny_config(shapes_coco, tmp_path / "run", early_stopping_min_delta=1.0, **options)
    result = fit(config)
    assert result.stopped_early and result.epochs_completed == 2
    assert (result.output_dir / "checkpoint_best_total.pth").is_file()
    last = str(result.output_dir / "checkpoint.pth")
    again = fit(config.with_overrides(resume=last))
    assert again.already_finished and again.stopped_early


def test_training_non_finite_loss_stops_naming_the_step(
    shapes_coco: Path,
    tmp_path: Path,
    tiny_config: Callable[..., RunConfig],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_total, calls = SetCriterion.total_loss, []

    def poisoned(self: SetCriterion, loss_dict: dict[str, torch.Tensor]) -> torch.Tensor:
        calls.append(1)
        total = real_total(self, loss_dict)
        return total * float("nan") if len(calls) == 7 else total  # epoch 1, step 1

    monkeypatch.setattr(SetCriterion, "total_loss", poisoned)
    with pytest.raises(NonFiniteLossError) as err:
        fit(tiny_config(shapes_coco, tmp_path / "run"))
    message = str(err.value)
    assert "non-finite loss at epoch 1, step 1 (optimizer step 6)" in message
    assert "checkpoint.pth" in message and "\n" not in message
    assert _state(tmp_path / "run" / "checkpoint.pth")["epoch"] == 0  # the last good state
