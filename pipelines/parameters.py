"""The training pipeline's parameters, declared once in :data:`PARAMETERS`.

The pipeline's signature and input descriptions, ``resolve_config``'s signature (every ``KNOB``,
``CONFIG`` and ``STEP`` parameter), the knobs ``run-local`` fills and the README table derive
from it. To add one: a ``Param`` line below; pass it to its step in ``training_pipeline.py``
(``params["name"]``) unless it is a ``KNOB`` or ``CONFIG`` (those reach ``resolve_config`` by
themselves; a ``STEP`` input reaches it too, only to be checked: ``pipelines.steps.config``);
then ``python -m pipelines.parameters README.md``. A ``PLATFORM`` default is the compiled
Platform's.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

REQUIRED: Any = inspect.Parameter.empty
KNOB = "knob"  # a RunConfig option; None = the model preset's value (resolve_config)
CONFIG = "config"  # another input of resolve_config
STEP = "step"  # a later step's input, checked by resolve_config too
PLATFORM = "platform"  # default: the compiled Platform's field of the same name


@dataclass(frozen=True)
class Param:
    """One pipeline parameter: ``help`` is one line, at most 100 characters (the KFP UI)."""

    name: str
    type: type
    default: Any
    help: str
    kind: str = ""


# name, type, default, help[, kind] (E501 is off for this file)
# fmt: off
PARAMETERS: tuple[Param, ...] = (
    Param("dataset_uri", str, REQUIRED, "s3:// or minio:// prefix of a COCO/YOLO dataset (train/, valid/, test/)", CONFIG),
    Param("model_size", str, "nano", "nano, small, medium, large, base, seg-nano ... seg-2xlarge; tiny: CPU tests.", CONFIG),
    Param("epochs", int, None, "training epochs; blank: the model preset's.", KNOB),
    Param("batch_size", int, None, "images per step per GPU; blank: the model preset's.", KNOB),
    Param("grad_accum_steps", int, None, "steps per optimizer update; blank: the model preset's.", KNOB),
    Param("lr", float, None, "learning rate; blank: the model preset's.", KNOB),
    Param("resolution", int, None, "input side in pixels; blank: the model preset's.", KNOB),
    Param("use_ema", bool, None, "keep an EMA of the weights (the better one is shipped); blank: preset's.", KNOB),
    Param("early_stopping", bool, None, "stop when validation mAP50:95 stops improving; blank: preset's.", KNOB),
    Param("overrides", dict, None, 'any other training option, e.g. {"train.warmup_epochs": 1}.', CONFIG),
    Param("pretrain_weights", str, "", "empty: official COCO weights (tiny: random); random; or a URI/path.", CONFIG),
    Param("publish_bucket", str, "mlpipeline", "bucket the model is published to; empty: not published.", STEP),
    Param("model_name", str, "", "the model's folder in the bucket; empty: rfdetr-<model_size>.", STEP),
    Param("model_version", str, "", "the version's folder; empty: YYYYMMDD-HHMMSS-<run id>.", STEP),
    Param("min_map", float, 0.0, "publish only when the evaluation mAP50:95 is at least this.", STEP),
    Param("require_improvement", bool, True, "publish only when it also beats the published model."),
    Param("checkpoint_mirror_uri", str, "s3://mlpipeline/rfdetr/checkpoint-mirror", "where training mirrors its resume files for retries; empty: off."),
    Param("quantize", str, "", "int8: also an int8 ONNX file calibrated on train images; empty: off.", STEP),
    Param("train_nodes", int, 1, "nodes of a multi-node train (compiled with --train-engine); 1: one pod.", PLATFORM),
    Param("gpus_per_node", int, 1, "GPUs (processes) per node of a multi-node train.", PLATFORM),
    Param("deploy_name", str, "", "InferenceService name (compiled with --deploy); empty: the model's.", STEP),
    Param("canary_traffic_percent", int, 0, "traffic share of a newly deployed version; 0: all of it.", STEP),
)
# fmt: on

DEFAULTS: dict[str, Any] = {p.name: p.default for p in PARAMETERS}
KNOBS: tuple[str, ...] = tuple(p.name for p in PARAMETERS if p.kind == KNOB)
CONFIG_INPUTS: tuple[Param, ...] = tuple(p for p in PARAMETERS if p.kind in (KNOB, CONFIG, STEP))
STEP_INPUTS: tuple[str, ...] = tuple(p.name for p in PARAMETERS if p.kind == STEP)


def args_section(params: tuple[Param, ...]) -> str:
    """A Google-style ``Args:`` block; KFP compiles each line into the input's description."""
    return "Args:\n" + "".join(f"    {p.name}: {p.help}\n" for p in params)


# KFP reads the pipeline's inputs from its signature and their descriptions from its docstring.
DOCSTRING = f"Train, evaluate, export and publish an RF-DETR model.\n\n{args_section(PARAMETERS)}"


def pipeline_signature(return_annotation: Any, platform: object) -> inspect.Signature:
    """The pipeline function's signature; ``PLATFORM`` defaults read from ``platform``."""
    return inspect.Signature(
        [
            inspect.Parameter(
                p.name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=getattr(platform, p.name) if p.kind == PLATFORM else p.default,
                # kfp 2.17 reads an optional type from typing.Optional, not from `int | None`
                annotation=Optional[p.type] if p.default is None else p.type,  # noqa: UP045
            )
            for p in PARAMETERS
        ],
        return_annotation=return_annotation,
    )


def _shown(value: Any) -> str:
    if value is REQUIRED or value is None:
        return "required" if value is REQUIRED else "unset"
    return f"`{json.dumps(value) if isinstance(value, bool) or value == '' else value}`"


def markdown_table() -> str:
    """The README's parameter table."""
    # "\\<": CommonMark would read <model_size> as an HTML tag
    rows = [
        f"| `{p.name}` | {_shown(p.default)}{' (compile option)' if p.kind == PLATFORM else ''} "
        f"| {p.help} |".replace("<", "\\<")
        for p in PARAMETERS
    ]
    return "\n".join(["| parameter | default | meaning |", "|---|---|---|", *rows]) + "\n"


_TABLE = re.compile(r"(<!-- parameters: start -->\n).*?(<!-- parameters: end -->)", re.DOTALL)


def readme_table(text: str) -> str | None:
    """The generated table in ``text`` (between the ``<!-- parameters -->`` markers), or None."""
    match = _TABLE.search(text)
    return text[match.end(1) : match.start(2)] if match else None


if __name__ == "__main__":  # python -m pipelines.parameters README.md
    path = Path(sys.argv[1])
    path.write_text(
        _TABLE.sub(lambda m: m.group(1) + markdown_table() + m.group(2), path.read_text())
    )
