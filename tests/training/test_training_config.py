"""RunConfig: flat and dotted options, typos, YAML/JSON round trip, instance train() guards."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import rfdetr.config
from rfdetr.config import FLAT_KEYS, SECTIONS, ConfigError, RunConfig, TrainConfig, get_preset
from rfdetr.training.setup import instance_run_config


def test_training_flat_keywords_land_in_their_sections() -> None:
    config = RunConfig.from_kwargs(
        "tiny", dataset_dir="data", epochs=3, lr=2e-4, resolution=96, wandb=True, run_test=False
    )
    assert config.model.name == "tiny" and config.model.resolution == 96
    assert config.model.hidden_dim == get_preset("tiny").hidden_dim  # preset kept
    assert (config.train.epochs, config.train.lr) == (3, 2e-4)
    assert config.log.wandb is True and config.eval.run_test is False
    assert config.data.dataset_dir == "data"


def test_training_defaults_are_upstreams() -> None:
    train = TrainConfig()
    assert (train.lr, train.lr_encoder, train.weight_decay) == (1e-4, 1.5e-4, 1e-4)
    assert (train.ema_decay, train.ema_tau, train.clip_max_norm) == (0.993, 100.0, 0.1)
    assert (train.lr_vit_layer_decay, train.lr_component_decay) == (0.8, 0.7)
    assert (train.checkpoint_interval, train.early_stopping_patience) == (10, 10)
    assert (train.lr_scheduler, train.lr_drop, train.seed) == ("step", 100, 42)
    assert (train.batch_size, train.grad_accum_steps) == (4, 4)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"epoch": 3}, "unknown training option 'epoch'; did you mean 'epochs'?"),
        ({"lr_schedular": "cosine"}, "did you mean 'lr_scheduler'?"),
        ({"train.epochz": 3}, "unknown option 'train.epochz'; did you mean 'train.epochs'?"),
        ({"epochs": 0}, "train.epochs: Input should be greater than or equal to 1"),
        ({"lr_scheduler": "linear"}, "train.lr_scheduler: Input should be 'step' or 'cosine'"),
        ({"square_resize_div_64": False}, "can only be True here"),
    ],
)
def test_training_bad_option_fails_with_a_one_line_message(
    options: dict[str, object], expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        RunConfig.from_kwargs("tiny", dataset_dir="data", **options)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_training_dataset_dir_is_required() -> None:
    with pytest.raises(ConfigError, match=r"data\.dataset_dir: required"):
        RunConfig.from_kwargs("tiny", epochs=2)


def test_training_upstream_fixed_options_accepted_at_their_value() -> None:
    config = RunConfig.from_kwargs("tiny", dataset_dir="d", square_resize_div_64=True)
    assert config.train.epochs == 100


def test_training_with_overrides_takes_dotted_and_flat_keys() -> None:
    config = RunConfig.from_kwargs("tiny", dataset_dir="d")
    changed = config.with_overrides({"train.epochs": 7, "log.project": "p"}, lr=3e-4)
    assert (changed.train.epochs, changed.log.project, changed.train.lr) == (7, "p", 3e-4)
    assert changed.model == config.model and config.train.epochs == 100  # original unchanged


@pytest.mark.parametrize("suffix", [".yaml", ".json", ""])  # "": a KFP artifact, JSON
def test_training_run_config_file_round_trip(tmp_path: Path, suffix: str) -> None:
    config = RunConfig.from_kwargs(
        "tiny-seg", dataset_dir="d", epochs=5, class_names=["a", "b"], tensorboard=True
    )
    path = config.to_file(tmp_path / f"run{suffix}")
    assert RunConfig.from_file(path) == config
    if suffix != ".yaml":  # JSON, as a KFP step writes its run_config artifact
        assert json.loads(path.read_text()) == config.model_dump(mode="json")


def test_training_yaml_model_section_may_name_a_preset(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model: {name: small, resolution: 640}\ndata: {dataset_dir: d}\n")
    config = RunConfig.from_file(path)
    assert config.model.resolution == 640 and config.model.dec_layers == 3  # small's depth


def test_training_yaml_typo_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("data: {dataset_dir: d}\ntrain: {epoch: 3}\n")
    with pytest.raises(ConfigError, match=r"run.yaml: train: unknown TrainConfig option 'epoch'"):
        RunConfig.from_file(path)


def test_training_malformed_yaml_is_one_line_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("data: {dataset_dir: d}\ntrain: [unclosed\n")
    with pytest.raises(ConfigError, match=r"run.yaml: not valid YAML/JSON: "):
        RunConfig.from_file(path)


def test_training_config_package_imports_in_order_model_presets_run() -> None:
    """model -> presets -> run: each imports only earlier ones of the package (no cycle)."""
    order = ["model", "presets", "run"]
    folder = Path(rfdetr.config.__file__).parent
    for index, name in enumerate(order):
        tree = ast.parse((folder / f"{name}.py").read_text())
        imported = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rfdetr.config")
        }
        assert imported <= {f"rfdetr.config.{earlier}" for earlier in order[:index]}, name


def test_training_every_flat_name_is_unique_and_routable() -> None:
    config = RunConfig.from_kwargs("tiny", dataset_dir="d")
    fields = [name for section in SECTIONS.values() for name in section.model_fields]
    assert len(FLAT_KEYS) == len(fields) - 1 == len(set(fields)) - 1  # all but model.name
    for name, section in FLAT_KEYS.items():
        assert name in type(getattr(config, section)).model_fields


def test_training_instance_train_rejects_architecture_changes() -> None:
    base = get_preset("tiny")
    config = instance_run_config(base, {"dataset_dir": "d", "resolution": 96})
    assert config.model.resolution == 96
    runtime = {"num_select": 5, "drop_path": 0.5, "gradient_checkpointing": True}  # marked
    config = instance_run_config(base, {"dataset_dir": "d", **runtime})
    assert {key: getattr(config.model, key) for key in runtime} == runtime
    with pytest.raises(ConfigError, match="option 'num_queries' changes the architecture"):
        instance_run_config(base, {"dataset_dir": "d", "num_queries": 20})
    with pytest.raises(ConfigError, match="pretrain_weights is a constructor argument"):
        instance_run_config(base, {"dataset_dir": "d", "pretrain_weights": "x.pth"})
    with pytest.raises(ConfigError, match="num_classes comes from the dataset"):
        instance_run_config(base, {"dataset_dir": "d", "num_classes": 4})
