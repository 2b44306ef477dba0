"""``rfdetr-pipeline objectstore start|status|env|stop`` through the real command line."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OBJECTSTORECONFIG_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "pipelines", "objectstore", *args],
        cwd=REPO_ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=90,
    )


def _listening_addresses(pid: int) -> set[str]:
    """``ip:port`` of every TCP socket ``pid`` listens on (from /proc; IPv4 and IPv6)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                ip_hex, port_hex = cols[1].split(":")
                ip = (
                    ".".join(str(int(ip_hex[i : i + 2], 16)) for i in (6, 4, 2, 0))
                    if len(ip_hex) == 8
                    else ip_hex
                )
                found.add(f"{ip}:{int(port_hex, 16)}")
    return found


def _env_exports(text: str) -> dict[str, str]:
    exports = {}
    for line in text.splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export ") :].partition("=")
            exports[name] = value.strip("'")
    return exports


def test_start_status_env_stop(
    tmp_path: Path, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "store"
    started = _cli(
        "start", "--data-dir", str(data), "--port", str(closed_port), "--bucket", "datasets"
    )
    try:
        assert started.returncode == 0, started.stderr
        assert f"endpoint: http://127.0.0.1:{closed_port}" in started.stdout
        assert "buckets:  datasets" in started.stdout
        pid = int((data / "weed.pid").read_text())
        assert stat.S_IMODE((data / "credentials.json").stat().st_mode) == 0o600
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"-master.telemetry=false" in cmdline and b"-ip.bind=127.0.0.1" in cmdline
        addresses = _listening_addresses(pid)
        assert f"127.0.0.1:{closed_port}" in addresses
        assert all(a.startswith("127.0.0.1:") for a in addresses), addresses

        again = _cli(
            "start", "--data-dir", str(data), "--port", str(closed_port), "--bucket", "models"
        )
        assert again.returncode == 0, again.stderr
        assert int((data / "weed.pid").read_text()) == pid  # reused, not restarted

        status = _cli("status", "--data-dir", str(data))
        assert status.returncode == 0 and "buckets:  datasets, models" in status.stdout

        exports = _env_exports(_cli("env", "--data-dir", str(data)).stdout)
        assert exports["OBJECTSTORECONFIG_PORT"] == str(closed_port)
        for name, value in exports.items():
            monkeypatch.setenv(name, value)
        from rfdetr import storage

        storage.upload_bytes(b"hello", "s3://models/hello.txt")
        assert storage.read_bytes("s3://models/hello.txt") == b"hello"
    finally:
        stopped = _cli("stop", "--data-dir", str(data))
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
    assert not (data / "weed.pid").exists()
    assert (
        not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    )
    not_running = _cli("status", "--data-dir", str(data))
    assert not_running.returncode == 1 and "not running" in not_running.stdout
    assert _cli("stop", "--data-dir", str(data)).returncode == 0


def test_keys_from_the_environment_are_used(tmp_path: Path, closed_port: int) -> None:
    keys = {"AWS_ACCESS_KEY_ID": "ci-access", "AWS_SECRET_ACCESS_KEY": "ci-secret-0123456789"}
    data = tmp_path / "store"
    started = _cli("start", "--data-dir", str(data), "--port", str(closed_port), env=keys)
    try:
        assert started.returncode == 0, started.stderr
        assert "keys:     environment" in started.stdout
        assert not (data / "credentials.json").exists()
        env_out = _cli("env", "--data-dir", str(data), env=keys).stdout
        assert "ci-secret" not in env_out and "OBJECTSTORECONFIG_PORT" in env_out
    finally:
        assert _cli("stop", "--data-dir", str(data)).returncode == 0


def test_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _cli("start", "--data-dir", str(tmp_path / "s"), "--port", str(port))
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert _cli("start", "--port", "70000").returncode == 2


def test_env_with_the_store_stopped_prints_nothing_to_eval(tmp_path: Path) -> None:
    result = _cli("env", "--data-dir", str(tmp_path / "none"))
    assert result.returncode != 0 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "not running" in result.stderr
    shell = subprocess.run(
        ["bash", "-c", f'eval "$({sys.executable} -m pipelines objectstore env '
         f'--data-dir {tmp_path / "none"})"; echo "status=$?"'],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert "syntax error" not in shell.stderr and "command not found" not in shell.stderr
    assert shell.stdout.strip() == "status=0"  # eval of nothing: the caller checks the exit


def test_env_also_exports_the_aws_names(tmp_path: Path, closed_port: int) -> None:
    data = tmp_path / "my store"
    started = _cli("start", "--data-dir", str(data), "--port", str(closed_port))
    assert started.returncode == 0, started.stderr
    try:
        exports = _env_exports(_cli("env", "--data-dir", str(data)).stdout)
        # the command `start` tells the user to run works as printed (it named no --data-dir)
        told = started.stdout.split("clients: ", 1)[1].splitlines()[0]
        shell = subprocess.run(
            ["bash", "-c", told.replace("rfdetr-pipeline", f"{sys.executable} -m pipelines")
             + '; echo "$OBJECTSTORECONFIG_PORT"'],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=90,
            env={k: v for k, v in os.environ.items() if not k.startswith("OBJECTSTORECONFIG_")},
        )  # fmt: skip
        assert shell.stdout.strip() == str(closed_port), (told, shell.stderr)
    finally:
        assert _cli("stop", "--data-dir", str(data)).returncode == 0
    assert exports["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{closed_port}"
    assert exports["AWS_ACCESS_KEY_ID"] == exports["OBJECTSTORECONFIG_ACCESSKEY"]
    assert exports["AWS_SECRET_ACCESS_KEY"] == exports["OBJECTSTORECONFIG_SECRETACCESSKEY"]
