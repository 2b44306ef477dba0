"""The ``rfdetr-pipeline`` command (also ``python -m pipelines``).

A sub-command is a module with ``add_parser(subparsers)`` (:func:`rfdetr.errors.command_parser`),
listed in :data:`COMMAND_MODULES`; handlers raise :class:`rfdetr.errors.UserError` (exit 2, or
``UserError(message, 1)`` for a server failure), printed as one line.
"""

from __future__ import annotations

import re
from typing import Any

from rfdetr.errors import command_parser, run_command

Subparsers = Any  # argparse's _SubParsersAction is private
# An option as data: (flags separated by spaces, help, other add_argument keywords).
Option = tuple[str, str, dict[str, Any]]

# Sub-command modules, in --help order. The pipeline's own commands (compile, run-local) go here.
COMMAND_MODULES: list[str] = [
    "pipelines.compile",
    "pipelines.local",
    "pipelines.objectstore",
    "pipelines.deploy",
]
HTTP_URL = re.compile(r"^https?://[^/\s]+")  # what --host and --pushgateway-url take
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", re.IGNORECASE)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}  # KFP's units
DESCRIPTION = (
    "RF-DETR training pipeline on Kubeflow: compile, run locally, local object store, submit, "
    "schedule."
)


def add_options(parser: Any, options: tuple[Option, ...]) -> None:
    """Add ``options`` to an argparse parser or argument group."""
    for flags, text, keywords in options:
        parser.add_argument(*flags.split(), help=text, **keywords)


def duration_s(text: str) -> float | None:
    """Seconds of ``90m``, ``0.5s``, ``7d`` or ``3600`` (units s m h d w), else None."""
    match = _DURATION.fullmatch(text)
    return None if match is None else float(match[1]) * _SECONDS[match[2].lower()]


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    return run_command(command_parser("rfdetr-pipeline", DESCRIPTION, COMMAND_MODULES), argv)
