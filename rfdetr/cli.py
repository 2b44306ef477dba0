"""The ``rfdetr`` command line: ``rfdetr <command> ...``.

Each command is a pair of functions: ``_add_<command>(subparsers)`` declares its arguments and
sets ``handler``, and the handler takes the parsed arguments and returns the exit code. New
commands (train, eval, predict, export) register the same way in :data:`_COMMANDS`; handlers
import their heavy modules lazily so ``rfdetr --help`` stays fast.

Exit codes: 0 success, 2 bad input (a dataset or arguments that cannot be used).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rfdetr.data.validation import DatasetReport

EXIT_OK = 0
EXIT_BAD_INPUT = 2

Subparsers = Any  # argparse's _SubParsersAction is private; this alias keeps signatures readable


def _add_validate(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check a COCO or YOLO dataset folder and report its problems",
        description=(
            "Detect the dataset format, count images, annotations and classes per split, and "
            "print every problem as 'path: severity: problem'. Exit code 0 when the dataset is "
            "usable (warnings allowed), 2 when it is not."
        ),
    )
    parser.add_argument("dataset_dir", metavar="DATASET_DIR", help="the dataset folder")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--deep",
        action="store_true",
        help="also decode every image and mask exactly as training does (finds truncated or "
        "corrupt pixel data; slower, imports torch)",
    )
    parser.set_defaults(handler=_run_validate)


def _run_validate(args: argparse.Namespace) -> int:
    from rfdetr.data.validation import validate_dataset

    report = validate_dataset(args.dataset_dir, deep=args.deep)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print("\n".join(format_report(report)))
    return EXIT_OK if report.usable else EXIT_BAD_INPUT


def format_report(report: DatasetReport) -> list[str]:
    """The human-readable report of ``rfdetr validate``, as lines.

    Every line is one line: control characters in paths and class names are escaped
    (:func:`~rfdetr.data.problems.one_line`), so a file name cannot forge a report line.
    """
    from rfdetr.data.problems import one_line

    lines = [one_line(f"dataset: {report.path} ({report.format or 'format not detected'})")]
    if report.splits:
        lines.append("splits:")
        for name, split in report.splits.items():
            crowd = f" ({split.crowd} crowd)" if split.crowd else ""
            lines.append(
                f"  {name:<6} {split.images:>8} images {split.annotations:>9} annotations{crowd}"
            )
    rows = report.class_rows()
    if rows:
        splits = list(report.splits)
        lines.append("classes (id: 0-based id used by rfdetr; dataset id: id in the files):")
        lines.append(
            f"  {'id':>4} {'dataset id':>10}  {'name':<20}" + "".join(f"{s:>9}" for s in splits)
        )
        for row in rows:
            counts = "".join(f"{row['counts'][s]:>9}" for s in splits)
            name = one_line(row["name"])
            lines.append(f"  {row['id']:>4} {row['source_id']:>10}  {name:<20}{counts}")
    if report.class_map is not None:
        for source_id, name in report.class_map.skipped:
            lines.append(
                f"skipped: category id {source_id} {one_line(repr(name))} (Roboflow superclass: "
                "supercategory 'none', no annotations of its own)"
            )
    errors, warnings = len(report.errors), len(report.warnings)
    lines.append(f"problems: {errors} error(s), {warnings} warning(s)")
    lines.extend(str(problem) for problem in report.problems)
    lines.append("result: usable" if report.usable else "result: NOT usable; fix the errors above")
    return lines


_COMMANDS: tuple[Callable[[Subparsers], None], ...] = (_add_validate,)

# Sub-commands living in their own modules; each module defines ``add_parser(subparsers)`` and
# keeps its heavy imports inside the handler.
_COMMAND_MODULES: tuple[str, ...] = (
    "rfdetr.evaluation.cli",
    "rfdetr.training.cli",
    "rfdetr.export.cli",
    "rfdetr.serving.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-command per entry of :data:`_COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="rfdetr", description="RF-DETR detection and segmentation: datasets, training, export."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_command in _COMMANDS:
        add_command(subparsers)
    for module in _COMMAND_MODULES:
        importlib.import_module(module).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on bad arguments (2)
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from rfdetr.data.problems import DatasetError

    try:
        return int(args.handler(args))
    except DatasetError as err:  # any command: bad data is one line and exit 2, never a traceback
        print(f"rfdetr {args.command}: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
