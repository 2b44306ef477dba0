"""The ``rfdetr-pipeline`` command (also ``python -m pipelines``).

Adding a sub-command: write a module that defines ``add_parser(subparsers)``; it declares its
arguments and calls ``parser.set_defaults(handler=fn)`` where ``fn(args) -> int`` returns the exit
code, importing heavy packages (kfp, torch) inside ``fn``. Then append the module path to
:data:`COMMAND_MODULES`. Handlers report bad input by raising :class:`CommandError`; object-store
errors (:class:`rfdetr.storage.StorageError`) are caught here too. No traceback reaches the user.

Exit codes: 0 success, 1 failure (a server or API error), 2 bad input.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Any

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2

Subparsers = Any  # argparse's _SubParsersAction is private

# Sub-command modules, in --help order. The pipeline's own commands (compile, run-local) go here.
COMMAND_MODULES: list[str] = [
    "pipelines.compile",
    "pipelines.run_local",
    "pipelines.objectstore",
    "pipelines.storage_commands",
    "pipelines.deploy",
]


class CommandError(Exception):
    """A one-line error for the user; ``exit_code`` 2 (bad input) unless told otherwise."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every module of :data:`COMMAND_MODULES` registered."""
    parser = argparse.ArgumentParser(
        prog="rfdetr-pipeline",
        description=(
            "RF-DETR training pipeline on Kubeflow: compile, run locally, local object store, "
            "submit, schedule."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_parser(subparsers)
    return parser


def _storage_exit_code(exc: Exception) -> int:
    from rfdetr.storage.errors import InvalidURIError, StorageConfigError

    return (
        EXIT_BAD_INPUT if isinstance(exc, (InvalidURIError, StorageConfigError)) else EXIT_FAILURE
    )


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    from rfdetr.storage.errors import StorageError

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
    try:
        return int(args.handler(args))
    except CommandError as exc:
        print(f"rfdetr-pipeline {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except StorageError as exc:
        print(f"rfdetr-pipeline {args.command}: error: {exc}", file=sys.stderr)
        return _storage_exit_code(exc)
    except KeyboardInterrupt:
        print(f"rfdetr-pipeline {args.command}: interrupted", file=sys.stderr)
        return 130
