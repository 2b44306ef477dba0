"""Typed configuration, in dependency order: :mod:`.model` (`ModelConfig`, the architecture) ->
:mod:`.presets` (the model sizes) -> :mod:`.run` (`RunConfig`, one training run)."""

from rfdetr.config.model import RUNTIME_MODEL_FIELDS, ConfigError, ModelConfig
from rfdetr.config.presets import get_preset, list_presets, toy_version
from rfdetr.config.run import (
    FLAT_KEYS,
    SECTIONS,
    DataConfig,
    EvalConfig,
    LogConfig,
    RunConfig,
    TrainConfig,
)

__all__ = [
    "FLAT_KEYS",
    "RUNTIME_MODEL_FIELDS",
    "SECTIONS",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "LogConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "get_preset",
    "list_presets",
    "toy_version",
]
