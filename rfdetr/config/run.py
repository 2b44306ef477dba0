"""`RunConfig`: everything one training run needs, in sections (``model``, ``data``, ``train``,
``eval``, ``log``)."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from rfdetr.config.model import ConfigError, ModelConfig, StrictModel
from rfdetr.config.presets import get_preset, list_presets

_JSON = (".json", "")  # JSON file suffixes; none: KFP artifact paths, which have no suffix


class DataConfig(StrictModel):
    """Which dataset and how batches are made from it.

    Attributes:
        dataset_dir: COCO or YOLO dataset folder (format detected).
        dataset_file: expected format; ``auto`` accepts either (``roboflow`` means COCO).
        class_names: when given, must equal the dataset's class names (a guard, as upstream).
        class_map: fixed classes (``ClassMap.to_dict()`` form: names + dataset ids). Filled in by
            training with the dataset's classes, so a saved run config records them.
        multi_scale: resize each optimizer step's batch to a random size around the resolution.
        expanded_scales: the wider multi-scale range (-5..+5 multiples of patch x windows).
        num_workers: DataLoader worker processes.
    """

    dataset_dir: str
    dataset_file: Literal["auto", "roboflow", "coco", "yolo"] = "auto"
    class_names: list[str] | None = None
    class_map: dict[str, Any] | None = None
    multi_scale: bool = True
    expanded_scales: bool = True
    num_workers: int = Field(2, ge=0, le=256)


class TrainConfig(StrictModel):
    """Optimisation, schedule, EMA, precision, checkpoints and early stopping.

    Defaults are upstream's (its `TrainConfig` plus the hidden ``populate_args`` values such as
    ``clip_max_norm=0.1``, ``seed=42`` and the loss weights); ``grad_accum_steps=4`` as in its
    documented parameters; ``cls_loss_coef=None`` means 1.0 (upstream 1.11.2).
    ``pretrain_weights`` is read only when training builds the model itself (CLI, pipeline).
    ``device``, ``amp``, ``tf32``, ``compile``: :mod:`rfdetr.training.runtime`.
    """

    epochs: int = Field(100, ge=1, le=100_000)
    batch_size: int = Field(4, ge=1, le=4096)
    grad_accum_steps: int = Field(4, ge=1, le=4096)
    lr: float = Field(1e-4, gt=0)
    lr_encoder: float = Field(1.5e-4, ge=0)
    weight_decay: float = Field(1e-4, ge=0)
    lr_vit_layer_decay: float = Field(0.8, gt=0, le=1)
    lr_component_decay: float = Field(0.7, gt=0, le=1)
    lr_scheduler: Literal["step", "cosine"] = "step"
    lr_drop: int = Field(100, ge=1, le=100_000)
    lr_min_factor: float = Field(0.0, ge=0, le=1)
    warmup_epochs: float = Field(0.0, ge=0, le=100_000)
    clip_max_norm: float = Field(0.1, ge=0)
    use_ema: bool = True
    ema_decay: float = Field(0.993, ge=0, lt=1)
    ema_tau: float = Field(100.0, ge=0)
    amp: bool = True
    amp_dtype: Literal["auto", "bf16", "fp16"] = "auto"
    compile: bool = False
    tf32: bool = True
    device: str | None = None
    seed: int = Field(42, ge=0, le=2**32 - 1)  # numpy's seed range
    output_dir: str = "output"
    resume: str | None = None
    pretrain_weights: str | None = None
    checkpoint_interval: int = Field(10, ge=1, le=100_000)
    early_stopping: bool = False
    early_stopping_patience: int = Field(10, ge=1, le=100_000)
    early_stopping_min_delta: float = Field(0.001, ge=0)
    early_stopping_use_ema: bool = False
    ia_bce_loss: bool = True
    aux_loss: bool = True
    focal_alpha: float = Field(0.25, ge=0, le=1)
    cls_loss_coef: float | None = Field(None, ge=0)
    bbox_loss_coef: float = Field(5.0, ge=0)
    giou_loss_coef: float = Field(2.0, ge=0)
    mask_ce_loss_coef: float = Field(5.0, ge=0)
    mask_dice_loss_coef: float = Field(5.0, ge=0)
    set_cost_class: float = Field(2.0, ge=0)
    set_cost_bbox: float = Field(5.0, ge=0)
    set_cost_giou: float = Field(2.0, ge=0)
    mask_point_sample_ratio: int = Field(16, ge=1, le=1024)


class EvalConfig(StrictModel):
    """Evaluation during and after training.

    Attributes:
        eval_batch_size: images per evaluation batch (None: the training ``batch_size``).
        run_test: after training, evaluate the best model on ``test/`` when that split exists.
    """

    eval_batch_size: int | None = Field(None, ge=1, le=4096)
    run_test: bool = True


class LogConfig(StrictModel):
    """Progress and experiment tracking.

    Attributes:
        tensorboard: None logs to TensorBoard when it is installed; True requires it.
        wandb: log to Weights & Biases (``WANDB_MODE=offline`` works without an account).
        project, run: W&B project and run name.
        progress_bar: a tqdm bar per epoch; None shows it only when stdout is a terminal.
    """

    tensorboard: bool | None = None
    wandb: bool = False
    project: str | None = None
    run: str | None = None
    progress_bar: bool | None = None

    @field_validator("progress_bar", mode="before")
    @classmethod
    def _upstream_bar_names(cls, value: Any) -> Any:
        # Upstream 1.11 names the bar style; "tqdm" is the bar drawn here.
        if value == "tqdm":
            return True
        if isinstance(value, str) and value not in ("true", "false"):
            raise ValueError(f"progress_bar '{value}' is not available; use True, False or None")
        return value


class RunConfig(StrictModel):
    """One training run: ``model``, ``data``, ``train``, ``eval`` and ``log`` sections.

    ``model`` may be a preset name (``"small"``) or a dict whose ``name`` is a preset and whose
    other keys override it.
    """

    model: ModelConfig = Field(default_factory=lambda: get_preset("nano"))
    data: DataConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    log: LogConfig = Field(default_factory=LogConfig)

    @model_validator(mode="before")
    @classmethod
    def _expand_model_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        model = data.get("model")
        if isinstance(model, str):
            return {**data, "model": get_preset(model)}
        if isinstance(model, dict) and model.get("name") in list_presets():
            overrides = {k: v for k, v in model.items() if k != "name"}
            return {**data, "model": get_preset(model["name"]).with_overrides(**overrides)}
        return data

    def effective_batch_size(self, world_size: int = 1) -> int:
        """Images per optimizer step over all processes: batch x accumulation x world size."""
        return self.train.batch_size * self.train.grad_accum_steps * world_size

    @classmethod
    def from_kwargs(cls, model: ModelConfig | str | None = None, **options: Any) -> RunConfig:
        """Build from upstream-style keywords (``dataset_dir=..., epochs=..., lr=...``).

        Raises:
            ConfigError: an unknown keyword (with the closest valid name) or an invalid value.
        """
        for key, (value, why) in _FIXED_UPSTREAM_OPTIONS.items():
            given = options.pop(key, value)
            if given != value and not (key == "sync_bn" and given is False):
                raise ConfigError(f"option '{key}' can only be {value} here: {why}")
        base: dict[str, Any] = {"data": {}}
        if isinstance(model, str):
            model = get_preset(model)
        if model is not None:
            base["model"] = model.model_dump()
        return _validated(_apply(base, options), "training options")

    def with_overrides(self, overrides: dict[str, Any] | None = None, **kw: Any) -> RunConfig:
        """A validated copy; keys are flat (``epochs``) or dotted (``"train.epochs"``)."""
        return _validated(_apply(self.model_dump(), {**(overrides or {}), **kw}), "overrides")

    @classmethod
    def from_file(cls, path: str | Path) -> RunConfig:
        """Read a YAML (``.yaml``/``.yml``) or JSON file (``.json``, or no suffix: a KFP
        artifact) with the sections as top-level keys."""
        file = Path(path)
        try:
            text = file.read_text()
        except OSError as err:
            raise ConfigError(f"{file}: cannot read the run config ({err.strerror})") from None
        try:
            data = json.loads(text) if file.suffix.lower() in _JSON else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as err:  # JSONDecodeError is a ValueError
            message = " ".join(str(err).split())
            raise ConfigError(f"{file}: not valid YAML/JSON: {message}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{file}: expected a mapping of sections (model, data, train, ...)")
        return _validated(data, str(file))

    def to_file(self, path: str | Path) -> Path:
        """Write YAML (JSON for a ``.json`` path or none); :meth:`from_file` reads it back equal."""
        file = Path(path)
        data = self.model_dump(mode="json")
        if file.suffix.lower() in _JSON:
            text = json.dumps(data, indent=2) + "\n"
        else:
            text = yaml.safe_dump(data, sort_keys=False)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
        return file


SECTIONS: dict[str, type[StrictModel]] = {
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "log": LogConfig,
}


# Flat option name -> its section; field names are unique across sections (a test checks it).
FLAT_KEYS: dict[str, str] = {
    name: section
    for section, model in SECTIONS.items()
    for name in model.model_fields
    if (section, name) != ("model", "name")  # the preset name: "model.name" only
}

# Upstream options with one fixed behaviour here: accepted at that value, refused otherwise.
_FIXED_UPSTREAM_OPTIONS: dict[str, tuple[Any, str]] = {
    "square_resize_div_64": (True, "images are always square-resized (upstream's default)"),
    "do_random_resize_via_padding": (False, "multi-scale resizes each step's batch instead"),
    "sync_bn": (True, "the model has no BatchNorm, so there is nothing to synchronise"),
}


def _apply(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    data = dict(base)  # sections are dicts here, replaced (never changed) below
    for key, value in overrides.items():
        section, _, field = key.partition(".")
        if field:
            model = SECTIONS.get(section)
            if model is None or field not in model.model_fields:
                raise ConfigError(f"unknown option '{key}'{_closest(key)}")
        elif key in FLAT_KEYS:
            section, field = FLAT_KEYS[key], key
        else:
            raise ConfigError(f"unknown training option '{key}'{_closest(key)}")
        data[section] = {**data.get(section, {}), field: value}
    return data


def _closest(key: str) -> str:
    names = sorted(FLAT_KEYS) + [f"{s}.{f}" for s, m in SECTIONS.items() for f in m.model_fields]
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _validated(data: dict[str, Any], source: str) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: {describe_error(err)}") from None


def describe_error(err: ValidationError) -> str:
    """The first problem of a pydantic error as ``section.field: message``."""
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "config"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "missing":
        message = "required (missing)"
    return f"{where}: {message}"
