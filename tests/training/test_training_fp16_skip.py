"""fp16 loss scaling: a step with inf/NaN is skipped by the ``GradScaler``, not fatal, and a
skipped step moves neither the weights nor the schedule, the EMA or the step count.

The scaler runs on the CPU here (``torch.amp.GradScaler("cpu")``, fp32 forward): its skip and
back-off logic is the same code as on CUDA; only fp16 overflow itself needs a GPU to happen, so
the overflow is injected (an infinite gradient, or an infinite loss).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from training_helpers import tiny_session

from rfdetr.models.criterion import SetCriterion
from rfdetr.training import step as step_module
from rfdetr.training.step import NonFiniteLossError, TrainSession, optimizer_step


def _batch() -> tuple[torch.Tensor, list[dict[str, Any]]]:
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    targets = [
        {"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2]] * 2)},
        {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.3]])},
    ]
    return images, targets


def _snapshot(session: TrainSession) -> dict[str, Any]:
    return {
        "weights": [p.detach().clone() for p in session.model.parameters()],
        "ema": [p.detach().clone() for p in session.ema.module.parameters()],
        "ema_updates": session.ema.updates,
        "lr_steps": session.scheduler.last_epoch,
        "global_step": session.global_step,
        "scale": session.scaler.get_scale(),
    }


def _unchanged(before: dict[str, Any], session: TrainSession) -> None:
    after = _snapshot(session)
    assert all(torch.equal(a, b) for a, b in zip(before["weights"], after["weights"], strict=True))
    assert all(torch.equal(a, b) for a, b in zip(before["ema"], after["ema"], strict=True))
    for key in ("ema_updates", "lr_steps", "global_step"):
        assert after[key] == before[key], key
    assert after["scale"] == before["scale"] / 2  # backed off, as the scaler does


def _poison_gradient(session: TrainSession) -> Any:
    parameter = next(p for p in session.model.parameters() if p.requires_grad)
    return parameter.register_hook(lambda grad: grad * float("inf"))


def test_training_fp16_inf_gradient_is_skipped_without_moving_anything() -> None:
    session = tiny_session(scaled=True)
    images, targets = _batch()
    optimizer_step(session, images, targets, 0, 0)  # one applied step first
    assert session.global_step == 1 and session.ema.updates == 1
    before = _snapshot(session)
    hook = _poison_gradient(session)
    values = optimizer_step(session, images, targets, 0, 1)
    hook.remove()
    assert values["loss"] == values["loss"]  # the loss itself was finite
    _unchanged(before, session)
    assert session.skipped_in_a_row == 1
    optimizer_step(session, images, targets, 0, 2)  # training goes on
    assert session.global_step == 2 and session.skipped_in_a_row == 0


def test_training_fp16_non_finite_loss_skips_instead_of_stopping(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session = tiny_session(scaled=True)
    real = SetCriterion.total_loss
    monkeypatch.setattr(SetCriterion, "total_loss", lambda self, d: real(self, d) * float("nan"))
    before = _snapshot(session)
    optimizer_step(session, *_batch(), 0, 0)
    _unchanged(before, session)
    assert all(p.grad is None for p in session.model.parameters())  # nothing left to leak


def test_training_fp16_persistent_non_finite_loss_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(step_module, "MAX_SKIPPED_STEPS", 3)
    session = tiny_session(scaled=True)
    real = SetCriterion.total_loss
    monkeypatch.setattr(SetCriterion, "total_loss", lambda self, d: real(self, d) * float("inf"))
    images, targets = _batch()
    optimizer_step(session, images, targets, 0, 0)
    optimizer_step(session, images, targets, 0, 1)
    with pytest.raises(NonFiniteLossError, match="3 skipped fp16 steps in a row"):
        optimizer_step(session, images, targets, 0, 2)
    assert session.global_step == 0


def test_training_without_scaler_a_non_finite_loss_still_stops_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session = tiny_session(scaled=False)
    real = SetCriterion.total_loss
    monkeypatch.setattr(SetCriterion, "total_loss", lambda self, d: real(self, d) * float("nan"))
    before = [p.detach().clone() for p in session.model.parameters()]
    with pytest.raises(NonFiniteLossError, match="non-finite loss at epoch 0, step 0"):
        optimizer_step(session, *_batch(), 0, 0)
    assert all(torch.equal(a, p) for a, p in zip(before, session.model.parameters(), strict=True))
