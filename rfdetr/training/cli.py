"""``rfdetr train``: options generated from the `RunConfig` sections (exactly what
``model.train(...)`` accepts), and ``--config`` for a saved run config they override."""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from rfdetr.config import FLAT_KEYS, SECTIONS


def add_parser(subparsers: Any) -> None:
    """Register ``rfdetr train``."""
    parser = subparsers.add_parser(
        "train",
        allow_abbrev=False,  # "--epoch" must fail, not silently mean "--epochs"
        help="train (fine-tune) an RF-DETR model on a COCO or YOLO dataset",
        description=(
            "Train an RF-DETR model. Every training option of model.train() is available "
            "(--epochs, --batch-size, --grad-accum-steps, --lr, --output-dir, --resume, ...); "
            "--config reads a YAML/JSON run config, which command-line options override. "
            "Exit code 0 on success, 2 for unusable options or data, 1 when training fails."
        ),
    )
    parser.add_argument("dataset_dir", nargs="?", help="dataset folder (or data.dataset_dir)")
    parser.add_argument("--config", metavar="FILE", help="a run config (YAML or JSON)")
    parser.add_argument(
        "--model",
        metavar="SIZE",
        help="model size preset, e.g. nano, small, seg-nano (default nano)",
    )
    for name, section in FLAT_KEYS.items():
        if name in ("class_map", "dataset_dir"):  # class_map: structured, give it in --config
            continue
        _add_option(parser, name, section)
    parser.set_defaults(handler=run)


def _add_option(parser: argparse.ArgumentParser, name: str, section: str) -> None:
    field = SECTIONS[section].model_fields[name]
    flag = "--" + name.replace("_", "-")
    default = "the --model preset's" if section == "model" else field.default
    help_text = f"[{section}] default: {default}"
    kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
    kind = field.annotation
    if typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None: X
        kind = next((a for a in typing.get_args(kind) if a is not type(None)), str)
    if kind is bool:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
    elif typing.get_origin(kind) is typing.Literal:
        parser.add_argument(flag, choices=list(typing.get_args(kind)), **kwargs)
    elif typing.get_origin(kind) is list:
        item = typing.get_args(kind)[0]
        parser.add_argument(flag, nargs="+", type=item if item in (int, str) else str, **kwargs)
    elif kind in (int, float):
        parser.add_argument(flag, type=kind, metavar=kind.__name__.upper(), **kwargs)
    else:
        parser.add_argument(flag, type=str, metavar="VALUE", **kwargs)


def run(args: argparse.Namespace) -> int:
    """Build the run config from ``--config`` and the options, then train."""
    from rfdetr.checkpoints.files import LAST
    from rfdetr.config import RunConfig
    from rfdetr.training.loop import fit

    # the positional dataset_dir counts when given (else --config's)
    options = {k: v for k, v in vars(args).items() if k in FLAT_KEYS and (k != "dataset_dir" or v)}
    config: RunConfig | None = None
    try:
        if args.config:
            config = RunConfig.from_file(args.config)
            if args.model:  # another size: its preset replaces the file's model section
                config = RunConfig.model_validate({**config.model_dump(), "model": args.model})
            config = config.with_overrides(options)
        else:
            config = RunConfig.from_kwargs(args.model or "nano", **options)
        result = fit(config)
    except KeyboardInterrupt:
        last = Path(config.train.output_dir) / LAST if config is not None else None
        hint = f"resume with --resume {last}" if last and last.is_file() else "nothing to resume"
        print(f"rfdetr train: interrupted; {hint}", file=sys.stderr)
        return 130
    summary = {
        "output_dir": str(result.output_dir),
        "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
        "map_50_95": (result.best_metrics or {}).get("map_50_95"),
        "epochs_completed": result.epochs_completed,
        "stopped_early": result.stopped_early,
        "already_finished": result.already_finished,
    }
    print(json.dumps(summary, indent=2))
    return 0
