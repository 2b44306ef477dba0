"""A real ``rfdetr serve`` on 127.0.0.1, serving a tiny model published to the test SeaweedFS.

The model is a ``tiny`` detector with every weight perturbed (so no zero-initialised layer hides
a difference), exported to ONNX and published as ``s3://<bucket>/tiny/v1/`` with a manifest, as
the pipeline's ``publish`` step lays it out. The server runs as a subprocess (``python -m rfdetr
serve``), is stopped with SIGTERM and must exit by itself.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_helpers import Server, perturbed_model

from rfdetr.api import RFDETRModel

CLASS_NAMES = ["cat", "dog", "cow"]
MODEL_NAME = "tiny-test"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[RFDETRModel, Path]:
    model = perturbed_model("tiny", CLASS_NAMES, seed=3)
    return model, model.export(tmp_path_factory.mktemp("onnx"), verify=False)


def _store_env(objectstore: object) -> dict[str, str]:
    from pipelines import seaweedfs

    config = seaweedfs.store_config(objectstore)
    return {
        "OBJECTSTORECONFIG_HOST": "127.0.0.1",
        "OBJECTSTORECONFIG_PORT": str(objectstore.port),
        "OBJECTSTORECONFIG_SECURE": "false",
        "OBJECTSTORECONFIG_ACCESSKEY": config.access_key,
        "OBJECTSTORECONFIG_SECRETACCESSKEY": config.secret_key,
    }


@pytest.fixture(scope="module")
def published(tiny_model: tuple[RFDETRModel, Path], objectstore: object) -> tuple[str, dict]:
    """``s3://<bucket>/tiny/v1/`` holding the ONNX file and a manifest, and the client env."""
    from rfdetr import storage

    env = _store_env(objectstore)
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith(("OBJECTSTORECONFIG_", "AWS_"))]:
            mp.delenv(name)
        for name, value in env.items():
            mp.setenv(name, value)
        bucket = f"serve-{uuid.uuid4().hex[:8]}"
        storage.ensure_bucket(bucket)
        folder = tiny_model[1].parent
        storage.upload_dir(folder, f"s3://{bucket}/tiny/v1")
    return f"s3://{bucket}/tiny/v1/", env


@pytest.fixture(scope="module")
def server(
    tiny_model: tuple[RFDETRModel, Path],
    published: tuple[str, dict],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    uri, store_env = published
    http_port, grpc_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OBJECTSTORECONFIG_", "AWS_"))}
    env.update(store_env, OMP_NUM_THREADS="1")
    command = [
        sys.executable, "-m", "rfdetr", "serve", "--model", uri, "--name", MODEL_NAME,
        "--host", "127.0.0.1", "--port", str(http_port), "--grpc-port", str(grpc_port),
        "--max-batch", "4", "--max-latency-ms", "150", "--threads", "1",
    ]  # fmt: skip
    start = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    running = Server(
        f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", MODEL_NAME, tiny_model[0],
        tiny_model[1], 0.0, proc, log,
    )  # fmt: skip
    try:
        _wait_ready(running, timeout=120)
        running.startup_s = time.monotonic() - start
        print(f"rfdetr serve ready after {running.startup_s:.1f} s")
        yield running
    finally:
        proc.terminate()
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            raise AssertionError(f"rfdetr serve ignored SIGTERM for 30 s; log: {log}") from None
    assert code == 0, f"rfdetr serve exited {code} on SIGTERM: {log.read_text()[-2000:]}"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://{server.http}/v2/health/ready"
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"rfdetr serve exited: {server.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"rfdetr serve not ready in {timeout} s: {server.log.read_text()}")
        time.sleep(0.1)
