"""Child processes under a memory cap and a timeout, for the hostile-input tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLI = "import sys; from rfdetr.cli import main; sys.exit(main(sys.argv[1:]))"


def run_python_limited(
    code: str, *args: str, address_space_mb: int, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """``python -c CODE ARGS`` under ``RLIMIT_AS`` and a wall-clock timeout.

    A hang fails the test through ``subprocess.TimeoutExpired``; a crash (signal) shows as a
    negative return code. Importing torch maps ~3-4 GB of address space (CUDA libraries) for
    ~1 GB resident, so code that imports torch needs a larger ``address_space_mb``.
    """
    limit = address_space_mb << 20
    # the child caps itself first: a preexec_fn would run Python in a fork of this threaded process
    capped = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))\n{code}"
    return subprocess.run(
        [sys.executable, "-c", capped, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )


def run_limited(
    argv: list[str], *, address_space_mb: int, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """``rfdetr ARGV`` in a child process (see :func:`run_python_limited`)."""
    return run_python_limited(CLI, *argv, address_space_mb=address_space_mb, timeout=timeout)
