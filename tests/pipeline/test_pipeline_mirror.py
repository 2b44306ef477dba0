"""The checkpoint mirror under termination and its retention rule, against a real SeaweedFS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.steps.mirror import SIGTERM_EXIT, prune
from rfdetr import storage

REPO = Path(__file__).resolve().parents[2]

# A training stand-in: inside watching(), write a resume point newer than any sync (the
# interval is an hour, so no background sync runs), say so, then wait to be terminated.
TRAINER = """
import sys, time
from pathlib import Path
from pipelines.steps.mirror import CheckpointMirror

run = Path(sys.argv[1])
with CheckpointMirror(sys.argv[2], interval=3600).watching(run):
    (run / "checkpoint.pth").write_bytes(b"resume point of epoch 7 " * 1000)
    (run / "log.txt").write_text("epoch 7\\n")
    print("ready", flush=True)
    time.sleep(120)
"""


def test_pipeline_mirror_sigterm_flushes_the_resume_point(
    tmp_path: Path, bucket: str, store_env: dict[str, str]
) -> None:
    """Kubernetes ends a pod (activeDeadlineSeconds, drain, preemption) with SIGTERM, then
    SIGKILL after the grace period: the handler must sync before the process exits."""
    run = tmp_path / "run"
    run.mkdir()
    uri = f"s3://{bucket}/mirror/run-9/train"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", TRAINER, str(run), uri],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == SIGTERM_EXIT == 143, proc.stderr.read() if proc.stderr else ""
    mirrored = storage.read_bytes(f"{uri}/checkpoint.pth")
    assert mirrored == (run / "checkpoint.pth").read_bytes()
    assert storage.read_bytes(f"{uri}/log.txt") == b"epoch 7\n"


def _objects(bucket: str, prefix: str) -> dict[str, object]:
    client = storage.ObjectStore.from_env().client
    return {o.object_name: o for o in client.list_objects(bucket, prefix, recursive=True)}


def test_pipeline_mirror_prune_deletes_only_runs_older_than_the_cutoff(
    bucket: str, store_env: dict[str, str]
) -> None:
    root = f"s3://{bucket}/rfdetr/checkpoint-mirror"
    storage.upload_bytes(b"old", f"{root}/run-old/train/checkpoint.pth")
    storage.upload_bytes(b"old log", f"{root}/run-old/train/log.txt")
    time.sleep(2.5)  # server timestamps have one-second resolution
    storage.upload_bytes(b"new", f"{root}/run-new/train/checkpoint.pth")
    storage.upload_bytes(b"outside", f"s3://{bucket}/rfdetr/other/keep.txt")
    found = _objects(bucket, "rfdetr/")
    old = found["rfdetr/checkpoint-mirror/run-old/train/log.txt"].last_modified
    new = found["rfdetr/checkpoint-mirror/run-new/train/checkpoint.pth"].last_modified
    assert new - old >= timedelta(seconds=2)
    # at the newest upload's time, with a cutoff between the two runs
    assert prune(root, (new - old) / 2, now=new, dry_run=True) == [f"{root}/run-old"]
    assert len(_objects(bucket, "rfdetr/")) == 4, "a dry run deletes nothing"
    assert prune(root, (new - old) / 2, now=new) == [f"{root}/run-old"]
    assert set(_objects(bucket, "rfdetr/")) == {
        "rfdetr/checkpoint-mirror/run-new/train/checkpoint.pth",
        "rfdetr/other/keep.txt",
    }


def test_pipeline_mirror_prune_command(
    bucket: str, store_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    root = f"s3://{bucket}/mirror"
    storage.upload_bytes(b"x", f"{root}/run-1/train/checkpoint.pth")
    assert main(["mirror", "prune", "--older-than", "7d", "--uri", root]) == 0
    assert "deleted 0 run mirror(s) older than 7d" in capsys.readouterr().out
    assert storage.exists(f"{root}/run-1/train/checkpoint.pth")
    assert main(["mirror", "prune", "--older-than", "0s", "--uri", root]) == 0
    assert f"deleted {root}/run-1" in capsys.readouterr().out
    assert not storage.exists(f"{root}/run-1/train/checkpoint.pth")
    assert main(["mirror", "prune", "--older-than", "a week", "--uri", root]) == 2
    assert "expected a number and a unit" in capsys.readouterr().err
