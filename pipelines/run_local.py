"""``rfdetr-pipeline run-local``: the training pipeline on this machine (kfp.local).

See :mod:`pipelines.local` for how a local run differs from a cluster run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pipelines.cli import Subparsers
from pipelines.parameters import PARAMETERS
from rfdetr.errors import EXIT_FAILED, UserError


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "run-local",
        help="run the training pipeline here with kfp.local (CPU or local GPU)",
        description=(
            "Run every step of the Kubeflow pipeline as a local subprocess "
            "(kfp.local.SubprocessRunner, this Python environment). Object-store settings come "
            'from the environment: eval "$(rfdetr-pipeline objectstore env)". Step output goes '
            "to --log; the console shows progress and a summary. Exit 2 for bad parameters or "
            "an unusable dataset, 1 when a step fails."
        ),
    )
    parser.add_argument("dataset_uri", help="s3://bucket/prefix, minio://bucket/prefix or a folder")
    for p in PARAMETERS[1:]:  # --model-size (or --model), --epochs, ... as --param would
        flags = [f"--{p.name.replace('_', '-')}", *(["--model"] if p.name == "model_size" else [])]
        parser.add_argument(*flags, dest=p.name, metavar=p.type.__name__.upper(), help=p.help)
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any pipeline parameter (repeatable; numbers, lists and dicts as "
        "JSON), e.g. --param 'overrides={\"num_workers\": 0}'",
    )
    parser.add_argument("--params-file", type=Path, help="JSON or YAML mapping of parameters")
    parser.add_argument(
        "--pipeline-root",
        type=Path,
        default=Path("local_outputs"),
        help="where run folders are written (default ./local_outputs)",
    )
    parser.add_argument(
        "--log",
        type=Path,
        default=None,
        help="file for the steps' output (default <pipeline-root>/<time>.log)",
    )
    parser.set_defaults(handler=_run)


def parameters_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Pipeline arguments: --params-file, DATASET_URI, --param, then the named options."""
    import tempfile

    from pipelines.compile import compile_pipeline
    from pipelines.kfp_package import PipelinePackage, build_params

    with tempfile.TemporaryDirectory() as tmp:
        package = PipelinePackage.load(compile_pipeline(Path(tmp, "pipeline.yaml")))
    values = {p.name: getattr(args, p.name) for p in PARAMETERS[1:]}
    named = [f"{name}={value}" for name, value in values.items() if value is not None]
    pairs = [f"dataset_uri={args.dataset_uri}", *args.param, *named]
    return build_params(package, pairs, args.params_file)


def _run(args: argparse.Namespace) -> int:
    from datetime import datetime

    from pipelines.local import LocalRunError, run_local, summary_lines

    params = parameters_from_args(args)
    log = args.log or args.pipeline_root / f"run-{datetime.now():%Y%m%d-%H%M%S}.log"
    print(f"running the pipeline locally; step output: {log}", file=sys.stderr)
    try:
        run = run_local(params, pipeline_root=args.pipeline_root, log_path=log)
    except LocalRunError as exc:
        bad_input = exc.task in ("resolve-config", "validate-dataset")
        raise UserError(
            f"step {exc.task or '?'} failed: {exc}", 2 if bad_input else EXIT_FAILED
        ) from None
    print("\n".join(summary_lines(run)))
    return 0
