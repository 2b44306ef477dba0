"""Run many ``rfdetr`` command lines in one process and record how each ended.

    python tests/fuzz/driver.py CASES.json RESULTS.json PROGRESS

``CASES.json`` is a list of argv lists. For each, :func:`rfdetr.cli.main` runs with stdout and
stderr captured; the exit code, the output, and the traceback of any exception that escaped
``main`` are written to ``RESULTS.json``. ``PROGRESS`` holds the index of the case being run, so
a crash or a hang (the parent's timeout) names its case. One process for all cases keeps the
cost per case to the command itself (torch is imported once).
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


def run_one(argv: list[str]) -> dict[str, object]:
    """``rfdetr ARGV`` in this process: its ``code``, ``out``, ``err``, ``traceback`` (of an
    exception that escaped ``main``, else empty) and ``seconds``, with its ``argv``."""
    from rfdetr.cli import main

    out, err = io.StringIO(), io.StringIO()
    logging.root.handlers.clear()  # main's basicConfig then logs into this case's stderr
    code, trace = None, ""
    start = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except BaseException:  # recording what escaped is the point
            trace = traceback.format_exc()
    return {"argv": argv, "code": code, "out": out.getvalue(), "err": err.getvalue(),
            "traceback": trace, "seconds": time.monotonic() - start}  # fmt: skip


def main() -> None:
    cases_file, results_file, progress, memory_mb = sys.argv[1:5]
    # the address-space cap is set here, not by a preexec_fn: the parent test process has
    # threads (ONNX Runtime, OpenVINO, servers), and forking it to run Python code is unsafe
    limit = int(memory_mb) << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    cases_file, results_file, progress = Path(cases_file), Path(results_file), Path(progress)
    results = []
    for index, argv in enumerate(json.loads(cases_file.read_text())):
        progress.write_text(str(index))
        results.append(run_one(argv))
    results_file.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
