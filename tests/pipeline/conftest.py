"""Fixtures of the pipeline tests: a real SeaweedFS store and Pushgateway on 127.0.0.1, small
synthetic datasets, and kfp artifacts in ``tmp_path``.

Steps run torch single-threaded: tiny models gain nothing from a second thread and lose a lot
to contention on a shared two-core machine; ``OMP_NUM_THREADS`` carries that to the
subprocesses kfp.local starts.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from rfdetr.data.synthetic import make_shapes_dataset

SPLITS = {"train": 8, "valid": 4, "test": 2}
_STORE_VARS = ("OBJECTSTORECONFIG_", "AWS_", "MINIO_SERVICE_")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clear_store_env(mp: pytest.MonkeyPatch) -> None:
    """Remove every object-store and Pushgateway variable, so tests see only what they set."""
    for name in list(os.environ):
        if name.startswith(_STORE_VARS) or name == "PUSHGATEWAY_URL":
            mp.delenv(name)


@pytest.fixture(autouse=True)
def _single_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def pipeline_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """SeaweedFS started by ``pipelines.seaweedfs.start`` with generated keys; stopped by PID."""
    from pipelines import seaweedfs

    data_dir = tmp_path_factory.mktemp("pipeline-store")
    with pytest.MonkeyPatch.context() as mp:
        clear_store_env(mp)
        info = seaweedfs.start(data_dir, _free_port(), buckets=("mlpipeline",))
    try:
        yield info
    finally:
        seaweedfs.stop(data_dir)


@pytest.fixture
def store_env(pipeline_store: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process's (and its subprocesses') environment pointed at the test store."""
    from pipelines import seaweedfs

    clear_store_env(monkeypatch)
    config = seaweedfs.store_config(pipeline_store)
    env = {
        "OBJECTSTORECONFIG_HOST": "127.0.0.1",
        "OBJECTSTORECONFIG_PORT": str(pipeline_store.port),
        "OBJECTSTORECONFIG_SECURE": "false",
        "OBJECTSTORECONFIG_ACCESSKEY": config.access_key,
        "OBJECTSTORECONFIG_SECRETACCESSKEY": config.secret_key,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def bucket(store_env: dict[str, str]) -> str:
    """A fresh, empty bucket."""
    from rfdetr.storage import ensure_bucket

    name = f"p-{uuid.uuid4().hex[:12]}"
    ensure_bucket(name)
    return name


@pytest.fixture(scope="session")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Roboflow-style COCO shapes dataset, 64 px, with a test split (read only)."""
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), splits=SPLITS, image_size=64)


@pytest.fixture
def broken_shapes(shapes: Path, tmp_path: Path) -> Path:
    """A copy of ``shapes`` with one training image missing."""
    copy = Path(shutil.copytree(shapes, tmp_path / "broken"))
    next(iter(sorted((copy / "train").glob("*.jpg")))).unlink()
    return copy


@pytest.fixture
def artifact(tmp_path: Path) -> Callable[..., Any]:
    """``artifact(Dataset, "name", source=None, metadata=None)``: a kfp artifact whose path is
    ``tmp_path/name`` (a copy of ``source`` when given), as a component receives it."""

    def make(cls: type, name: str, source: Path | None = None, metadata: dict | None = None):
        path = tmp_path / name
        if source is not None:
            if source.is_dir():
                shutil.copytree(source, path)
            else:
                shutil.copy2(source, path)
        return cls(name=name, uri=str(path), metadata=dict(metadata or {}))

    return make


@pytest.fixture(scope="session")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of Debian's prometheus-pushgateway on 127.0.0.1 (in memory), stopped by PID."""
    binary = shutil.which("prometheus-pushgateway") or "/usr/bin/prometheus-pushgateway"
    if not Path(binary).exists():
        pytest.skip(
            "prometheus-pushgateway is not installed "
            "(apt-get install -y --no-install-recommends prometheus-pushgateway)"
        )
    port = _free_port()
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
        deadline = time.monotonic() + 15
        while not _answers(f"{url}/-/ready"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pushgateway not ready: {log.read_text()[-500:]}")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False
