"""EMA: the tau warm-up ramp, float-only averaging, and the checkpoint round trip."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from rfdetr.training.ema import ModelEMA


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.register_buffer("count", torch.tensor(7, dtype=torch.int64))


def test_training_ema_decay_ramps_with_tau() -> None:
    ema = ModelEMA(_Net(), decay=0.993, tau=100)
    decays = []
    for _ in range(3):
        decays.append(ema.current_decay())
        ema.update(_Net())
    expected = [0.993 * (1 - math.exp(-n / 100)) for n in (1, 2, 3)]  # upstream's ramp
    assert decays == pytest.approx(expected)
    assert ModelEMA(_Net(), decay=0.9, tau=0).current_decay() == 0.9


def test_training_ema_averages_floats_and_copies_integer_buffers() -> None:
    model = _Net()
    ema = ModelEMA(model, decay=0.5, tau=0)
    start = ema.module.linear.weight.clone()
    with torch.no_grad():
        model.linear.weight.add_(1.0)
        model.count.fill_(12)
    ema.update(model)
    torch.testing.assert_close(ema.module.linear.weight, 0.5 * start + 0.5 * model.linear.weight)
    assert ema.module.count.dtype == torch.int64 and int(ema.module.count) == 12  # not 9.5 or 9
    assert not any(p.requires_grad for p in ema.module.parameters())
    assert not ema.module.training


def test_training_ema_state_round_trip(tmp_path: Path) -> None:
    model = _Net()
    ema = ModelEMA(model, decay=0.9, tau=10)
    for _ in range(4):
        with torch.no_grad():
            model.linear.weight.mul_(1.1)
        ema.update(model)
    torch.save(ema.state_dict(), tmp_path / "ema.pth")
    restored = ModelEMA(_Net(), decay=0.9, tau=10)
    restored.load_state_dict(torch.load(tmp_path / "ema.pth", weights_only=True))
    assert restored.updates == 4 and restored.current_decay() == ema.current_decay()
    for key, value in ema.module.state_dict().items():
        assert torch.equal(restored.module.state_dict()[key], value)
    ema.update(model)
    restored.update(model)
    assert torch.equal(restored.module.linear.weight, ema.module.linear.weight)
