"""Shared test settings and servers.

CPU only, two threads, deterministic seeds. Real SeaweedFS (S3) and Pushgateway servers run on
127.0.0.1 on free ports, with data in temp folders, and are stopped by PID.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


_STORE_VARS = ("OBJECTSTORECONFIG_", "AWS_", "MINIO_SERVICE_")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    return free_port()


def clear_store_env(mp: pytest.MonkeyPatch) -> None:
    """Remove every object-store variable, so tests see only what they set."""
    for name in list(os.environ):
        if name.startswith(_STORE_VARS) or name == "PUSHGATEWAY_URL":
            mp.delenv(name)


@pytest.fixture(scope="session")
def objectstore(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A running SeaweedFS (``pipelines.seaweedfs.start``) with generated keys; stopped by PID.

    Tied to this pytest process: a run killed before teardown takes the server with it.
    """
    from pipelines import seaweedfs

    data_dir = tmp_path_factory.mktemp("objectstore")
    with pytest.MonkeyPatch.context() as mp:
        clear_store_env(mp)  # the generated local-only keys, not the developer's
        info = seaweedfs.start(data_dir, free_port(), buckets=("mlpipeline",), tied=True)
    try:
        yield info
    finally:
        seaweedfs.stop(data_dir)


@pytest.fixture
def store_env(objectstore: object, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The client environment for the session's SeaweedFS, exactly as `objectstore env` prints."""
    from pipelines import seaweedfs

    clear_store_env(monkeypatch)
    config = seaweedfs.store_config(objectstore)
    env = {
        "OBJECTSTORECONFIG_HOST": "127.0.0.1",
        "OBJECTSTORECONFIG_PORT": str(objectstore.port),
        "OBJECTSTORECONFIG_SECURE": "false",
        "OBJECTSTORECONFIG_ACCESSKEY": config.access_key,
        "OBJECTSTORECONFIG_SECRETACCESSKEY": config.secret_key,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def bucket(store_env: dict[str, str]) -> str:
    """A fresh, empty bucket on the session's store."""
    from rfdetr.storage import ensure_bucket

    name = f"t-{uuid.uuid4().hex[:12]}"
    ensure_bucket(name)
    return name


@pytest.fixture(scope="session")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of Debian's prometheus-pushgateway on 127.0.0.1 (in-memory), stopped by PID."""
    binary = shutil.which("prometheus-pushgateway") or (
        "/usr/bin/prometheus-pushgateway"
        if Path("/usr/bin/prometheus-pushgateway").exists()
        else None
    )
    if binary is None:
        pytest.skip(
            "prometheus-pushgateway is not installed "
            "(apt-get install -y --no-install-recommends prometheus-pushgateway)"
        )
    port = free_port()
    log = tmp_path_factory.mktemp("pushgateway") / "pushgateway.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(f"{url}/-/ready", proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:  # not listening yet
        return False


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not _answers(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} not ready: {log.read_text(errors='replace')[-500:]}")
        time.sleep(0.05)
