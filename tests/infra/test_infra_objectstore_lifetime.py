"""A store tied to its owner cannot outlive it (issue 13: a leaked ``weed mini`` kept running in CI
after the test process was gone).

Each test starts a real store, ``pipelines.seaweedfs.start(tied=True)`` as the test fixtures do,
in a child Python process, ends that process the way CI ends a test run (SIGKILL, SIGTERM's
default action, a plain exit that forgets ``stop``) and checks the server process is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipelines import process_lifetime, seaweedfs

_OWNER = """
import sys, time
from pathlib import Path
from pipelines import seaweedfs

info = seaweedfs.start(Path(sys.argv[1]), int(sys.argv[2]), tied=True)
print(info.pid, flush=True)
if sys.argv[3] == "wait":
    time.sleep(600)
"""
_STORE_VARS = ("OBJECTSTORECONFIG_", "AWS_", "MINIO_SERVICE_")


def _start_owner(data_dir: Path, port: int, then: str) -> tuple[subprocess.Popen[str], int]:
    """A child Python process that starts a tied store; (the child, the server's PID)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_STORE_VARS)}
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(root), env.get("PYTHONPATH"))))
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(data_dir), str(port), then],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=root,
    )
    line = owner.stdout.readline().strip()
    if not line.isdigit():
        owner.kill()
        _, err = owner.communicate(timeout=30)
        pytest.fail(f"the owner did not start a store: {err.strip()[-500:]}")
    server = int(line)
    assert process_lifetime.alive(server)
    return owner, server


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while process_lifetime.alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=lambda s: s.name)
def test_the_server_dies_with_its_killed_owner(
    tmp_path: Path, closed_port: int, sig: signal.Signals
) -> None:
    data_dir = tmp_path / "store"
    owner, server = _start_owner(data_dir, closed_port, "wait")
    try:
        owner.send_signal(sig)  # no finally, no atexit: only the kernel can clean up
        assert owner.wait(timeout=30) == -sig
        assert _gone_within(server, 10), f"SeaweedFS (pid {server}) outlived its owner"
    finally:
        process_lifetime.signal_group(server, signal.SIGKILL)  # never leak, even on failure
        owner.kill()
        owner.communicate()
    assert seaweedfs.status(data_dir) is None


def test_an_owner_that_exits_without_stop_stops_the_server_cleanly(
    tmp_path: Path, closed_port: int
) -> None:
    data_dir = tmp_path / "store"
    owner, server = _start_owner(data_dir, closed_port, "exit")
    try:
        assert owner.wait(timeout=60) == 0
        assert _gone_within(server, 10)
    finally:
        process_lifetime.signal_group(server, signal.SIGKILL)
        owner.communicate()
    assert not (data_dir / "weed.pid").exists()  # removed by stop(): an orderly SIGTERM stop


def test_a_tied_server_is_refused_off_the_main_thread() -> None:
    errors: list[BaseException] = []

    def attempt() -> None:
        try:
            process_lifetime.die_with_parent()
        except RuntimeError as exc:
            errors.append(exc)

    worker = threading.Thread(target=attempt)
    worker.start()
    worker.join()
    assert len(errors) == 1 and "main thread" in str(errors[0])
