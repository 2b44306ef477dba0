"""The finite-weights check of every checkpoint read (``check_tensors``), now one fused
max-|x| per tensor: it must flag exactly the tensors the former per-tensor
``not v.isfinite().all()`` flagged (rfdetr/checkpoints/formats.py before issue 17's step work),
for every floating dtype a checkpoint holds, and leave integer and empty tensors alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rfdetr.checkpoints.formats import CheckpointError, check_tensors


def former_bad(state_dict: dict[str, torch.Tensor]) -> list[str]:
    return [k for k, v in state_dict.items() if v.is_floating_point() and not v.isfinite().all()]


def make_state(poison: dict[str, float]) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    state = {
        "a.weight": torch.randn(64, 32, generator=generator),
        "b.bias": torch.randn(7, generator=generator).to(torch.bfloat16),
        "c.half": torch.randn(3, 5, generator=generator).to(torch.float16),
        "d.big": torch.full((4,), 3.0e38),  # finite, near the fp32 limit: must stay accepted
        "e.count": torch.tensor([5, 7], dtype=torch.int64),
        "f.empty": torch.empty(0, 4),
        "g.double": torch.randn(2, 2, generator=generator, dtype=torch.float64),
    }
    for key, value in poison.items():
        state[key].view(-1)[1] = value
    return state


@pytest.mark.parametrize(
    "poison",
    [
        {},
        {"a.weight": float("nan")},
        {"b.bias": float("inf")},
        {"c.half": float("-inf"), "g.double": float("nan")},
        {"d.big": float("nan")},
    ],
)
def test_flags_the_same_tensors_as_the_former_check(poison: dict[str, float]) -> None:
    state = make_state(poison)
    expected = former_bad(state)
    assert sorted(expected) == sorted(poison)
    if not expected:
        check_tensors(state, Path("model.pth"))
        return
    with pytest.raises(CheckpointError) as caught:
        check_tensors(state, Path("model.pth"))
    message = str(caught.value)
    assert f"in {len(expected)} tensor(s), first {expected[0]!r}" in message
    assert message.startswith("model.pth: weights are not finite")


def test_non_tensor_entries_are_still_refused() -> None:
    with pytest.raises(CheckpointError, match="holds a str under 'x'"):
        check_tensors({"x": "not a tensor"}, Path("model.pth"))  # type: ignore[dict-item]
