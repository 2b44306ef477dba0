"""podman's Docker-compatible API, and what kfp.local and the helpers need of it on this VM."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import ULIMITS, SetupError

if TYPE_CHECKING:
    import docker


def remove_bridge() -> None:
    """podman may create its default CNI bridge on first use; only host networking is used."""
    if Path("/sys/class/net/cni-podman0").exists():
        subprocess.run(["ip", "link", "delete", "cni-podman0"], check=False)


@contextlib.contextmanager
def podman_service(folder: Path, containers_conf: Path) -> Iterator[docker.DockerClient]:
    """podman's Docker-compatible API on a private socket in ``folder`` (stopped at the end);
    a client of it. ``DOCKER_HOST`` points at it meanwhile (kfp's DockerRunner uses
    ``docker.from_env()``)."""
    import docker

    if shutil.which("podman") is None:
        raise SetupError("no podman (containers/verify_local.sh installs it)")
    if not containers_conf.is_file():
        raise SetupError(f"no {containers_conf} (containers/verify_local.sh writes it)")
    sock = folder / "podman.sock"
    env = {**os.environ, "CONTAINERS_CONF": str(containers_conf)}
    log = open(folder / "podman-service.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{sock}"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    client = None
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                tail = (folder / "podman-service.log").read_text(errors="replace")[-500:]
                raise SetupError(f"podman system service exited ({proc.returncode}): {tail}")
            if sock.exists():
                with contextlib.suppress(Exception):
                    client = docker.DockerClient(base_url=f"unix://{sock}", timeout=600)
                    client.ping()
                    break
            if time.monotonic() > deadline:
                raise SetupError("podman system service did not answer within 30 s")
            time.sleep(0.2)
        os.environ["DOCKER_HOST"] = f"unix://{sock}"  # kfp's DockerRunner: docker.from_env()
        yield client
    finally:
        if client is not None:
            client.close()
        os.environ.pop("DOCKER_HOST", None)
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        sock.unlink(missing_ok=True)
        remove_bridge()


@contextlib.contextmanager
def podman_not_found_as_404() -> Iterator[None]:
    """Make podman's "no such container" look like Docker's (404 NotFound, not 500).

    kfp's DockerRunner auto-removes each container and reads its logs and exit status after
    the start; it handles a container that is already gone (Docker: 404 -> NotFound) but not
    podman 4.3's answer to the same request (500 "... no such container"), so a step that
    ends within a few tenths of a second aborted the whole local run. With this, kfp behaves
    as with Docker. Nothing about the steps changes: their real exit codes and complete output
    come from :class:`~verify_pipeline.watcher.ContainerWatcher`.
    """
    import docker
    from docker.api.client import APIClient

    original = APIClient._raise_for_status

    def raise_for_status(self: APIClient, response: Any) -> None:
        try:
            original(self, response)
        except docker.errors.APIError as exc:
            gone = "no such container" in str(exc.explanation or "").lower()
            if exc.status_code != 500 or not gone or isinstance(exc, docker.errors.NotFound):
                raise
            raise docker.errors.NotFound(
                str(exc), response=exc.response, explanation=exc.explanation
            ) from exc

    APIClient._raise_for_status = raise_for_status  # type: ignore[method-assign]
    try:
        yield
    finally:
        APIClient._raise_for_status = original  # type: ignore[method-assign]


def ulimits() -> list[Any]:
    """The containers' ulimits (:data:`~verify_pipeline.common.ULIMITS`) as docker-py wants them."""
    import docker

    return [docker.types.Ulimit(name=n, soft=v, hard=v) for n, v in ULIMITS.items()]


def run_helper(
    client: docker.DockerClient, image: str, command: list[str], mounts: dict[str, str]
) -> str:
    """Run ``command`` in ``image`` as its user (host network); its output; raises on failure."""
    import docker

    volumes = {host: {"bind": inside, "mode": "rw"} for host, inside in mounts.items()}
    try:
        out = client.containers.run(
            image,
            command,
            remove=True,
            network_mode="host",
            ulimits=ulimits(),
            volumes=volumes,
            stdout=True,
            stderr=True,
        )
    except docker.errors.ContainerError as exc:
        stderr = exc.stderr.decode(errors="replace") if exc.stderr else ""
        raise SetupError(
            f"{' '.join(command)[:120]} failed ({exc.exit_status}): {stderr}"
        ) from None
    return out.decode(errors="replace")


def image_user(client: docker.DockerClient, image: str) -> tuple[int, int]:
    """(uid, gid) the image runs as (its ``USER``, numeric as the Dockerfiles set it)."""
    user = client.images.get(image).attrs["Config"].get("User") or "0"
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        raise SetupError(f"{image}: USER {user!r} is not numeric uid[:gid]")
    return int(uid), int(gid or uid)
