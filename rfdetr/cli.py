"""The ``rfdetr`` command line: one sub-command per module of :data:`COMMAND_MODULES` (see
:func:`rfdetr.errors.command_parser`; ``validate`` lives here). Exit codes: 0 success, 2 bad
input, 1 a failure that is not the input's."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from rfdetr.errors import EXIT_BAD_INPUT, command_parser, one_line, run_command

if TYPE_CHECKING:
    from rfdetr.data.validation import DatasetReport


def add_parser(subparsers: Any) -> None:
    """Register ``rfdetr validate``."""
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
    return 0 if report.usable else EXIT_BAD_INPUT


def format_report(report: DatasetReport) -> list[str]:
    """The human-readable report of ``rfdetr validate``, as lines (paths and class names
    escaped with :func:`~rfdetr.errors.one_line`)."""
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


# Sub-command modules, in --help order.
COMMAND_MODULES: tuple[str, ...] = (
    "rfdetr.cli",
    "rfdetr.evaluation.cli",
    "rfdetr.training.cli",
    "rfdetr.export.cli",
    "rfdetr.serving.cli",
)
DESCRIPTION = "RF-DETR detection and segmentation: datasets, training, export."


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    return run_command(command_parser("rfdetr", DESCRIPTION, COMMAND_MODULES), argv)
