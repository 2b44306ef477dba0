"""Pipeline parameters -> one validated ``RunConfig`` (the ``resolve_config`` step).

The knobs (:data:`pipelines.parameters.KNOBS`) default to None, meaning "the preset's value", so
every default stays written once, in :mod:`rfdetr.config`. ``overrides`` takes any other option,
flat (``"warmup_epochs"``) or dotted (``"train.warmup_epochs"``); a knob and an override naming
the same option must agree.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.parameters import KNOBS, STEP_INPUTS
from pipelines.steps.common import plain_number, step_metrics
from pipelines.steps.weights import pipeline_weights
from rfdetr.config import FLAT_KEYS, ConfigError, RunConfig

logger = logging.getLogger(__name__)


def _dotted(key: str) -> str:
    """``"epochs"`` -> ``"train.epochs"``; dotted keys unchanged."""
    return key if "." in key else f"{FLAT_KEYS.get(key, '?')}.{key}"


def check_conflicts(knobs: Mapping[str, Any], overrides: Mapping[str, Any]) -> None:
    """Raise ConfigError when a knob and an override set one option to different values."""
    given = {_dotted(k): (k, v) for k, v in knobs.items() if v is not None}
    for key, value in overrides.items():
        hit = given.get(_dotted(key))
        if hit is not None and hit[1] != value:
            raise ConfigError(
                f"{hit[0]}={hit[1]!r} and overrides[{key!r}]={value!r} disagree; set one of them"
            )


def check_step_inputs(values: Mapping[str, Any]) -> None:
    """Raise what export, publish or deploy would raise on these :data:`STEP_INPUTS` values: a
    typo fails in seconds on a CPU pod, not after days of training (or never: min_map 50 meant as
    a percent)."""
    from pipelines.steps.deploy import service_name
    from pipelines.steps.publish import check_name
    from rfdetr.export.exporter import QUANTIZE_CHOICES
    from rfdetr.storage.uris import check_bucket_name

    if values.get("publish_bucket"):
        check_bucket_name(values["publish_bucket"], "publish_bucket")
    for key in ("model_name", "model_version"):
        if values.get(key):
            check_name(values[key], key)
    min_map = values.get("min_map") or 0.0
    if plain_number(min_map) is None or not 0.0 <= min_map <= 1.0:
        raise ConfigError(f"min_map {min_map!r}: an mAP50:95 is a number from 0 to 1")
    if values.get("quantize") and values["quantize"] not in QUANTIZE_CHOICES:
        raise ConfigError(f"quantize {values['quantize']!r}: expected one of {QUANTIZE_CHOICES}")
    if values.get("deploy_name"):
        service_name("", values["deploy_name"])
    if not 0 <= (values.get("canary_traffic_percent") or 0) <= 100:
        raise ConfigError(
            f"canary_traffic_percent {values['canary_traffic_percent']}: expected 0 to 100"
        )


def resolve_run_config(arguments: Mapping[str, Any]) -> RunConfig:
    """The run config from the ``resolve_config`` inputs (``dataset_uri`` is recorded as
    ``data.dataset_dir``; the train step points it at the downloaded copy).

    Raises:
        ConfigError: an unknown size or option (with the closest valid name), an invalid value,
            or a knob contradicting an override. UserError: a bad :data:`STEP_INPUTS` value.
    """
    knobs = {k: v for k, v in arguments.items() if k not in STEP_INPUTS}
    check_step_inputs(arguments)
    dataset_uri, model_size = str(knobs.pop("dataset_uri")), str(knobs.pop("model_size"))
    overrides = dict(knobs.pop("overrides", None) or {})
    knobs["pretrain_weights"] = knobs.get("pretrain_weights") or None
    check_conflicts(knobs, overrides)
    given = {k: v for k, v in knobs.items() if v is not None}
    given["pretrain_weights"] = pipeline_weights(knobs["pretrain_weights"], model_size)
    config = RunConfig.from_kwargs(model_size, dataset_dir=dataset_uri, **given)
    return config.with_overrides(overrides) if overrides else config


def resolved_knobs(config: RunConfig) -> dict[str, Any]:
    """The model size and every knob's value in ``config`` (the preset's where it was unset)."""
    values = {key: getattr(getattr(config, FLAT_KEYS[key]), key) for key in KNOBS}
    return {"model_size": config.model.name, **values}


def write_run_config(dest: str | Path, arguments: Mapping[str, Any]) -> RunConfig:
    """:func:`resolve_run_config`, written as JSON to ``dest``."""
    with step_metrics("resolve_config"):
        config = resolve_run_config(arguments)
        config.to_file(dest)  # JSON: a KFP artifact path has no suffix
    logger.info("run config: %s", resolved_knobs(config))
    return config
