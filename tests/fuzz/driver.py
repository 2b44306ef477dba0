"""Run many cases in one process and record how each ended.

    python tests/fuzz/driver.py CASES.json RESULTS.jsonl PROGRESS MEMORY_MB START

``CASES.json`` is a list of cases from index ``START`` on. A case is an ``rfdetr`` argv list, run
by :func:`rfdetr.cli.main`, or ``{"call": NAME, "args": [...]}`` for a library entry point a
pipeline step calls (:data:`CALLS`), held to the command line's contract: a
:class:`~rfdetr.errors.UserError` prints ``rfdetr NAME: error: <message>`` and gives exit 2.
Either may first write a mutated checkpoint (:func:`run_one`). stdout and stderr are captured;
the exit code, the output, and the traceback of any exception that escaped are appended to
``RESULTS.jsonl``, one line per case, as soon as the case ends. ``PROGRESS`` holds the index of
the case being run, so the parent (:mod:`supervisor`) can name a case that crashed or hung the
process, and start a new one after it. One process for many cases keeps the cost per case to the
case itself (torch is imported once).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any


def _from_checkpoint(path: str, size: str = "") -> int:
    from rfdetr.api import RFDETRModel

    RFDETRModel.from_checkpoint(path, size=size or None)
    return 0


def _select_checkpoint(run_dir: str, dest: str) -> int:
    from pipelines.steps.model import select_checkpoint

    select_checkpoint(run_dir, dest)
    return 0


CALLS = {"from_checkpoint": _from_checkpoint, "select_checkpoint": _select_checkpoint}


def _call(name: str, args: list[str]) -> int:
    """A library call at the command line's boundary: a UserError is one line and exit 2."""
    from rfdetr.errors import UserError, message

    try:
        return CALLS[name](*args)
    except UserError as exc:
        print(f"rfdetr {name}: error: {message(exc)}", file=sys.stderr)
        return exc.exit_code


def run_one(case: list[str] | dict[str, Any]) -> dict[str, object]:
    """Run ``case``: its ``code``, ``out``, ``err``, ``traceback`` (of an exception that escaped,
    else empty) and ``seconds``, with its ``argv`` (a call's name and arguments).

    A case ``{"mutant": SPEC, "then": CASE}`` first writes the file :func:`checkpoint_mutations.
    write_mutant` makes from SPEC (here, so the shards share the work), then runs CASE.
    """
    from rfdetr.cli import main

    if isinstance(case, dict) and "mutant" in case:
        from checkpoint_mutations import write_mutant

        write_mutant(**case["mutant"])  # outside the try: a failing mutator is the harness's bug
        case = case["then"]
    out, err = io.StringIO(), io.StringIO()
    logging.root.handlers.clear()  # main's basicConfig then logs into this case's stderr
    code, trace = None, ""
    start = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            if isinstance(case, dict):
                logging.basicConfig(level=logging.INFO, stream=sys.stderr)
                code = _call(case["call"], case["args"])
            else:
                code = main(case)
        except BaseException:  # recording what escaped is the point
            trace = traceback.format_exc()
    argv = [case["call"], *case["args"]] if isinstance(case, dict) else case
    return {"argv": argv, "code": code, "out": out.getvalue(), "err": err.getvalue(),
            "traceback": trace, "seconds": time.monotonic() - start}  # fmt: skip


def main() -> None:
    cases_file, results_file, progress, memory_mb, first = sys.argv[1:6]
    # the address-space cap is set here, not by a preexec_fn: the parent test process has
    # threads (ONNX Runtime, OpenVINO, servers), and forking it to run Python code is unsafe
    limit = int(memory_mb) << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import rfdetr.cli  # noqa: F401  (imported before the first case: its time is no case's)

    cases = json.loads(Path(cases_file).read_text())
    with open(results_file, "a", encoding="utf-8") as results:
        for index in range(int(first), len(cases)):
            Path(progress).write_text(str(index))
            record = {"index": index, **run_one(cases[index])}
            results.write(json.dumps(record) + "\n")
            results.flush()


if __name__ == "__main__":
    main()
