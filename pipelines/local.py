"""Run the training pipeline on this machine with ``kfp.local`` (``rfdetr-pipeline run-local``):
:meth:`Platform.for_local`, each step a subprocess of this interpreter
(``kfp.local.SubprocessRunner(use_venv=False)``). Artifacts land under
``<pipeline_root>/rfdetr-training-<timestamp>/<task>/<output>`` and are read in place; a retried
step reuses its folders (training resumes from its work folder); kfp.local fails on None, so unset
optional parameters are filled (:func:`local_arguments`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pipelines.cli import Subparsers
from pipelines.parameters import CONFIG_INPUTS, KNOBS, PARAMETERS, REQUIRED
from rfdetr.errors import EXIT_FAILED, UserError

DEFAULT_ROOT = "local_outputs"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK_LINE = re.compile(r"(Executing task '([\w-]+)'|Task '([\w-]+)' finished with status (\w+))")
_ERROR_LINE = re.compile(r"^\s*([\w_]+): error: (.*)$")


class LocalRunError(RuntimeError):
    """The local run failed; ``task`` is the failed step, the message its error."""

    def __init__(self, message: str, task: str | None) -> None:
        super().__init__(message)
        self.task = task


@dataclass
class LocalRun:
    """Where a finished local run put its results."""

    run_dir: Path
    model: Path
    onnx_model: Path
    report: Path
    map_50_95: float
    published_uri: str
    log_path: Path | None
    tasks: list[str] = field(default_factory=list)

    @property
    def onnx_file(self) -> Path | None:
        return min(self.onnx_model.glob("*.onnx"), default=None)

    @property
    def checkpoint(self) -> Path | None:
        return min(self.model.glob("*.pth"), default=None)


def local_arguments(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """``arguments`` with every unset optional parameter filled: knobs with the preset's values,
    ``overrides`` ``{}``, the checkpoint mirror off.

    Raises:
        ConfigError: the arguments do not make a valid run config.
    """
    from pipelines.steps.config import resolve_run_config, resolved_knobs

    defaults = {p.name: p.default for p in CONFIG_INPUTS if p.default is not REQUIRED}
    args = {**defaults, "checkpoint_mirror_uri": "", **arguments}
    args["overrides"] = args["overrides"] or {}
    if any(args[key] is None for key in KNOBS):
        config = {p.name: args.get(p.name, "") for p in CONFIG_INPUTS}
        resolved = resolved_knobs(resolve_run_config(config))
        args.update({key: resolved[key] for key in KNOBS if args[key] is None})
    return args


class _ProgressTee(io.TextIOBase):
    """Stdout (where kfp.local prints the steps' output) to the log file, step start/end lines to
    ``console``; ``<step>: error: ...`` lines kept for the failure message."""

    def __init__(self, log: TextIO, console: TextIO | None) -> None:
        self.log, self.console = log, console
        self.step_errors: list[str] = []
        self.tasks: list[str] = []
        self._pending = ""
        self._collecting = False  # the last line was (part of) a step's error
        self._started = time.monotonic()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.log.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._line(_ANSI.sub("", line))
        return len(text)

    def _line(self, line: str) -> None:
        error = _ERROR_LINE.match(line)
        if error:
            self.step_errors.append(f"{error.group(1)}: {error.group(2)}")
            self._collecting = True
        elif self._collecting and line.startswith("    ") and line.strip():
            self.step_errors[-1] += "\n" + line[4:]  # the rest of a multi-line error, unindented
        else:
            self._collecting = False
        match = _TASK_LINE.search(line)
        if match is None:
            return
        if match.group(2):
            self.tasks.append(match.group(2))
            self._started = time.monotonic()
            text = f"  {match.group(2):<18} "
        else:
            seconds = time.monotonic() - self._started
            text = f"{match.group(4).lower():<8} {seconds:6.1f} s\n"
        if self.console is not None:
            self.console.write(text)
            self.console.flush()

    def flush(self) -> None:
        self.log.flush()


@contextlib.contextmanager
def _captured(log_path: Path | None, console: TextIO | None) -> Iterator[_ProgressTee]:
    """Stdout into a :class:`_ProgressTee`; kfp.local's INFO log lines kept off the console."""
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        with (
            open(log_path, "w") if log_path is not None else tempfile.TemporaryFile("w+") as sink,
            contextlib.redirect_stdout(_ProgressTee(sink, console)) as tee,
        ):
            yield tee
    finally:
        root.setLevel(level)


def run_local(
    arguments: Mapping[str, Any],
    *,
    pipeline_root: str | Path = DEFAULT_ROOT,
    log_path: str | Path | None = None,
    console: TextIO | None = sys.stderr,
) -> LocalRun:
    """Run the pipeline with ``arguments`` (at least ``dataset_uri``) in a run folder under
    ``pipeline_root``; steps' output to ``log_path`` (None: a temporary file), progress lines to
    ``console`` (None: silent).

    Raises:
        LocalRunError: a step failed; the message is the step's error.
        ConfigError: the arguments make no valid run config.
    """
    from kfp import local

    from pipelines._platform import Platform
    from pipelines.training_pipeline import build_pipeline

    args = local_arguments(arguments)
    pipeline = build_pipeline(Platform.for_local())
    root = Path(pipeline_root).absolute()
    log = Path(log_path).absolute() if log_path is not None else None
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    with warnings.catch_warnings(), _captured(log, console) as tee:
        # Our image is not named "python..."; kfp.local warns about that for every step.
        warnings.filterwarnings("ignore", message="You may be attemping to run a task")
        try:
            task = pipeline(**args)
        except RuntimeError as exc:
            failed = re.search(r"Inner task failed: '?([\w-]+)", _ANSI.sub("", str(exc)))
            name = failed.group(1) if failed else None
            message = tee.step_errors[-1] if tee.step_errors else _ANSI.sub("", str(exc))
            hint = f" (full log: {log})" if log else ""
            raise LocalRunError(f"{message}{hint}", name) from None
    out = task.outputs
    model = Path(out["model"].path)
    return LocalRun(
        model.parent.parent,
        model,
        Path(out["onnx_model"].path),
        Path(out["report"].path),
        float(out["map_50_95"]),
        str(out["published_uri"]),
        log,
        tee.tasks,
    )


def summary_lines(run: LocalRun) -> list[str]:
    """A short human summary of a finished run."""
    metrics = json.loads((run.report / "metrics.json").read_text())
    split = metrics.get("meta", {}).get("split", "?")
    lines = [
        f"mAP50:95 {run.map_50_95:.3f} on the {split} split "
        f"(mAP50 {metrics.get(metrics.get('iou_type', 'bbox'), {}).get('map_50', -1):.3f})",
        f"checkpoint: {run.checkpoint}",
        f"onnx:       {run.onnx_file}",
        f"report:     {run.report / 'report.html'}",
    ]
    if run.published_uri:
        root = run.published_uri.rstrip("/").rsplit("/", 1)[0]
        lines.append(f"published:  {run.published_uri}/ (now {root}/latest.json)")
    else:  # the publish step's decision.json says why
        decision = run.run_dir / "publish" / "published" / "decision.json"
        doc = json.loads(decision.read_text()) if decision.is_file() else {}
        lines.append(f"published:  nothing ({doc.get('reason', 'unknown reason')})")
    if run.log_path:
        lines.append(f"log:        {run.log_path}")
    return lines


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
    param = "any pipeline parameter (repeatable; numbers, lists and dicts as JSON), e.g. "
    param += "--param 'overrides={\"num_workers\": 0}'"
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help=param)
    parser.add_argument("--params-file", type=Path, help="JSON or YAML mapping of parameters")
    root_help = "where run folders are written (default ./local_outputs)"
    parser.add_argument("--pipeline-root", type=Path, default=Path(DEFAULT_ROOT), help=root_help)
    log_help = "file for the steps' output (default <pipeline-root>/<time>.log)"
    parser.add_argument("--log", type=Path, help=log_help)
    parser.set_defaults(handler=_run)


def parameters_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Pipeline arguments: --params-file, DATASET_URI, --param, then the named options."""
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
