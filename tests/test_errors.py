"""One error boundary for every command line (issue 16, item 6).

Every sub-command of ``rfdetr`` and ``rfdetr-pipeline`` runs its handler inside
:func:`rfdetr.errors.run_command`: a :class:`~rfdetr.errors.UserError` (the base of every error
a user may see) ends as exactly one stderr line and its exit code; a bug keeps its traceback.
The handlers are replaced by one that raises, so the test covers the real parsers and
entry points without running a command.
"""

from __future__ import annotations

import argparse
import pickle
from collections.abc import Callable
from typing import Any

import pytest

import pipelines.cli
import rfdetr.cli
from rfdetr.errors import UserError, command_parser

# One parsable command line per sub-command; the test below checks that none is missing.
COMMANDS: dict[str, list[list[str]]] = {
    "rfdetr": [
        ["validate", "data"],
        ["train", "data"],
        ["eval", "--weights", "w.pth", "--dataset-dir", "data"],
        ["export", "--weights", "w.pth", "--output-dir", "out"],
        ["serve", "--model", "m.onnx"],
    ],
    "rfdetr-pipeline": [
        ["compile"],
        ["run-local", "data"],
        ["objectstore", "status"],
        ["weights", "mirror", "--size", "nano"],
        ["mirror", "prune", "--older-than", "7d"],
        ["dataset", "upload", "data", "s3://bucket/data"],
        ["submit", "pipeline.yaml"],
        ["schedule", "pipeline.yaml", "--cron", "0 0 3 * * 1"],
    ],
}
MAINS: dict[str, Callable[[list[str] | None], int]] = {
    "rfdetr": rfdetr.cli.main,
    "rfdetr-pipeline": pipelines.cli.main,
}
PARSERS = {
    "rfdetr": (rfdetr.cli.DESCRIPTION, rfdetr.cli.COMMAND_MODULES),
    "rfdetr-pipeline": (pipelines.cli.DESCRIPTION, pipelines.cli.COMMAND_MODULES),
}
CASES = [(prog, argv) for prog, argvs in COMMANDS.items() for argv in argvs]


def _user_errors() -> list[UserError]:
    """One instance of each kind of user error the library and the pipeline raise."""
    from pipelines.steps.common import StepError
    from rfdetr.checkpoints.formats import CheckpointError
    from rfdetr.config import ConfigError
    from rfdetr.data.problems import DatasetError
    from rfdetr.export.onnx import ExportError
    from rfdetr.storage.errors import InvalidURIError

    return [
        UserError("--flag 3: out of range"),
        DatasetError("data/train/_annotations.coco.json", "not JSON\nline two"),
        ConfigError("run.yaml: epochs: must be >= 1"),
        CheckpointError("w.pth: not a checkpoint"),
        InvalidURIError("s3:/x: not an s3:// URI"),
        ExportError("out: cannot write"),
        StepError("dataset: no manifest.json"),
    ]


def _raise_from_handlers(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """Every ``set_defaults(handler=...)`` registers a handler that raises ``error`` instead."""
    original = argparse.ArgumentParser.set_defaults

    def raising(args: argparse.Namespace) -> int:
        raise error

    def set_defaults(self: argparse.ArgumentParser, **kwargs: Any) -> None:
        if "handler" in kwargs:
            kwargs["handler"] = raising
        original(self, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "set_defaults", set_defaults)


def test_every_sub_command_is_covered() -> None:
    for prog, (description, modules) in PARSERS.items():
        parser = command_parser(prog, description, modules)
        choices = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
        assert sorted(choices) == sorted(argv[0] for argv in COMMANDS[prog]), prog


@pytest.mark.parametrize("error", _user_errors(), ids=lambda e: type(e).__name__)
@pytest.mark.parametrize(("prog", "argv"), CASES, ids=[" ".join(a[:2]) for _, a in CASES])
def test_a_user_error_is_one_stderr_line_and_exit_2(
    prog: str, argv: list[str], error: UserError, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    _raise_from_handlers(monkeypatch, error)
    assert MAINS[prog](argv) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1 and out == "", err
    expected = " ".join(str(error).split())
    assert lines[0] == f"{prog} {argv[0]}: error: {expected}"


def _failures() -> list[UserError]:
    """Errors that are not the input's fault: exit code 1."""
    from pipelines.seaweedfs import ObjectStoreServerError
    from rfdetr.export.verify import ExportVerificationError
    from rfdetr.storage.errors import StorageServerError, StorageUnavailableError
    from rfdetr.training.step import NonFiniteLossError

    return [
        StorageUnavailableError("s3://b: cannot reach"),
        StorageServerError("s3://b: the object store answered HTTP 500"),
        ExportVerificationError("m.onnx: batch 2: FAILED"),
        NonFiniteLossError("epoch 3: the loss is NaN"),
        ObjectStoreServerError("127.0.0.1:9000: did not start"),
        UserError("KFP at http://kfp: answered 503", 1),
    ]


@pytest.mark.parametrize("error", _failures(), ids=lambda e: type(e).__name__)
@pytest.mark.parametrize(("prog", "argv"), CASES[:1] + CASES[-3:-2])
def test_failures_exit_1_and_bugs_keep_their_traceback(
    prog: str, argv: list[str], error: UserError, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    _raise_from_handlers(monkeypatch, error)
    assert MAINS[prog](argv) == 1
    assert capsys.readouterr().err == f"{prog} {argv[0]}: error: {error}\n"
    monkeypatch.undo()
    _raise_from_handlers(monkeypatch, KeyError("a bug"))
    with pytest.raises(KeyError, match="a bug"):
        MAINS[prog](argv)


def test_user_errors_keep_their_exit_code_through_pickling() -> None:
    """DataLoader workers and subprocesses send errors pickled."""
    again = pickle.loads(pickle.dumps(UserError("s3://b: refused", 1)))
    assert (type(again), str(again), again.exit_code) == (UserError, "s3://b: refused", 1)
    assert pickle.loads(pickle.dumps(UserError("x"))).exit_code == 2
