"""Config values that no GPU node can run fail at once, with one line naming the field (issue 13:
``hidden_dim=1e9``, ``resolution=1e6``, ``num_workers=100000`` passed ``resolve_config`` and
failed later on the GPU node)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rfdetr.config import ConfigError, RunConfig, list_presets

UNBOUNDED = [
    ("hidden_dim", 10**9, "hidden_dim:"),
    ("resolution", 10**6, "resolution:"),
    ("num_workers", 100_000, "data.num_workers"),
    ("num_queries", 10**7, "num_queries:"),
    ("num_select", 10**7, "num_select:"),
    ("dec_layers", 10**5, "dec_layers:"),
    ("dim_feedforward", 10**9, "dim_feedforward:"),
    ("group_detr", 10**5, "group_detr:"),
    ("num_classes", 10**7, "num_classes:"),
    ("epochs", 10**9, "train.epochs"),
    ("batch_size", 10**6, "train.batch_size"),
    ("grad_accum_steps", 10**6, "train.grad_accum_steps"),
    ("eval_batch_size", 10**6, "eval.eval_batch_size"),
    ("seed", 2**64, "train.seed"),
    ("seed", -1, "train.seed"),
    ("lr", float("inf"), "train.lr"),
    ("lr", float("nan"), "train.lr"),
    ("warmup_epochs", float("inf"), "train.warmup_epochs"),
    ("clip_max_norm", float("nan"), "train.clip_max_norm"),
]


@pytest.mark.parametrize(("key", "value", "field"), UNBOUNDED)
def test_an_unrunnable_value_is_a_one_line_config_error(
    key: str, value: object, field: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_kwargs("tiny", dataset_dir=str(tmp_path), **{key: value})
    message = str(caught.value)
    assert "\n" not in message and field in message, message


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_is_within_the_bounds(preset: str, tmp_path: Path) -> None:
    config = RunConfig.from_kwargs(preset, dataset_dir=str(tmp_path))
    assert config.model.name == preset
