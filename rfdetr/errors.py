"""Errors for users (:class:`UserError`), and the command-line boundary that turns them into one
line and an exit code (:func:`run_command`; the pipeline steps': ``pipelines.steps.common``).

A :class:`UserError` is bad input (a dataset, config, checkpoint, URI, option) or a failed service
(an object store, a KFP API); every error type a user may see derives from it, any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Iterable

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


class UserError(Exception):
    """An error whose one-line message names the file, URI or option and says what is wrong.

    ``exit_code``: 2 (bad input) unless a subclass or the raiser says 1 (a failure that is not
    the input's: a server that does not answer, a run that diverged).
    """

    exit_code: int = EXIT_BAD_INPUT

    def __init__(self, message: str = "", exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code  # an instance attribute: pickling keeps it (__dict__)


def one_line(text: str) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\x1b``...), so a file name or a
    class name cannot break a message or a report line, or forge one."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def message(error: BaseException) -> str:
    """The error's text on one line (white space runs folded), or its class name when empty."""
    return one_line(" ".join(str(error).split())) or type(error).__name__


def command_parser(prog: str, description: str, modules: Iterable[str]) -> argparse.ArgumentParser:
    """A parser with ``-v`` and the sub-commands of ``modules``: each module's
    ``add_parser(subparsers)`` declares one and sets its ``handler(args) -> exit code``, which
    imports heavy packages (torch, kfp) itself."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in modules:
        importlib.import_module(module).add_parser(subparsers)
    return parser


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse ``argv``, set up logging and run the chosen sub-command's ``handler``.

    A :class:`UserError`, or an ``OSError`` (a file the user named cannot be read or written),
    prints ``<prog> <command>: error: <message>`` and returns its exit code (2 for an
    ``OSError``); Ctrl-C returns 130; any other exception propagates with its traceback.
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on bad arguments (2)
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    where = f"{parser.prog} {args.command}"
    try:
        return int(args.handler(args))
    except (UserError, OSError) as exc:
        print(f"{where}: error: {message(exc)}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        print(f"{where}: interrupted", file=sys.stderr)
        return 130
