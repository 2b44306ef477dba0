"""Every step container's command, user, complete output and real exit code, as podman saw it."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import STORE_VARS

if TYPE_CHECKING:
    import docker


@dataclass
class StepContainer:
    """One step container: what ran, as whom, how it ended, where its output is."""

    id: str
    image: str
    step: str = "?"
    created: float = 0.0
    started: float | None = None
    died: float | None = None
    exit_code: int | None = None
    command: list[str] = field(default_factory=list)
    user: str = ""
    store_env: tuple[str, ...] = ()  # names of its object-store variables (never the values)
    log: Path | None = None

    @property
    def seconds(self) -> float | None:
        """From creation to exit (podman's "start" event comes late)."""
        return None if self.died is None else self.died - self.created


class ContainerWatcher:
    """Every container this process creates: its step, command, user, complete output, and
    (from podman's event stream) its real exit code and times.

    docker-py's ``create_container`` is wrapped while the watcher is active, so each container
    kfp.local creates is registered (inspected, and its output attached) before it starts:
    nothing races the auto-removal. kfp.local itself attaches after the start and loses the
    output of a container that has already ended, often the very error message that matters;
    the copy here is in ``log_dir/<n>-<step>.log``. podman reports the exit code in its "die"
    event even though the container is removed right after.
    """

    def __init__(self, client: docker.DockerClient, log_dir: Path) -> None:
        self.client = client
        self.log_dir = log_dir
        self.containers: dict[str, StepContainer] = {}
        self._events: dict[str, list[Mapping[str, Any]]] = {}
        self._lock = threading.Lock()
        self._stream: Any = None
        self._threads: list[threading.Thread] = []
        self._original: Any = None
        self.errors: list[str] = []  # containers it could not register (the check fails)

    def __enter__(self) -> ContainerWatcher:
        from docker.api.client import APIClient

        self._stream = self.client.events(decode=True, filters={"type": "container"})
        self._spawn(self._read)
        self._original = original = APIClient.create_container
        watcher = self

        def create_container(api: APIClient, *args: Any, **kwargs: Any) -> Any:
            created = original(api, *args, **kwargs)
            try:
                watcher._register(created["Id"])
            except Exception as exc:  # never change what the runner does
                watcher.errors.append(f"{created['Id'][:12]}: {type(exc).__name__}: {exc}")
            return created

        APIClient.create_container = create_container  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        from docker.api.client import APIClient

        APIClient.create_container = self._original  # type: ignore[method-assign]
        time.sleep(1.0)  # the last die/remove events
        with contextlib.suppress(Exception):
            self._stream.close()
        for thread in self._threads:
            thread.join(timeout=10)

    def ordered(self) -> list[StepContainer]:
        """The containers seen so far, in the order they were created."""
        with self._lock:
            return sorted(self.containers.values(), key=lambda c: c.created)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _register(self, cid: str) -> None:
        """A container just created (not started yet): its command, user, output."""
        config = self.client.api.inspect_container(cid)["Config"]
        record = StepContainer(cid, config.get("Image", ""), created=time.time())
        record.command, record.user = list(config.get("Cmd") or []), config.get("User") or ""
        names = {item.split("=", 1)[0] for item in config.get("Env") or []}
        record.store_env = tuple(sorted(n for n in names if n.startswith(STORE_VARS)))
        if "--function_to_execute" in record.command:
            record.step = record.command[record.command.index("--function_to_execute") + 1]
        with self._lock:
            record.log = self.log_dir / f"{len(self.containers) + 1:02d}-{record.step}.log"
            self.containers[cid] = record
            for event in self._events.pop(cid, []):
                self._apply(record, event)
        stream = self.client.api.attach(cid, stream=True, logs=True)
        self._spawn(self._follow, record, stream)

    def _follow(self, record: StepContainer, stream: Iterator[bytes]) -> None:
        assert record.log is not None
        with open(record.log, "wb") as sink, contextlib.suppress(Exception):
            for chunk in stream:
                sink.write(chunk)

    def _read(self) -> None:
        with contextlib.suppress(Exception):  # the stream raises when closed
            for event in self._stream:
                cid = event.get("id") or event.get("Actor", {}).get("ID", "")
                with self._lock:
                    record = self.containers.get(cid)
                    if record is None:  # not registered yet (or not ours)
                        self._events.setdefault(cid, []).append(event)
                    else:
                        self._apply(record, event)

    @staticmethod
    def _apply(record: StepContainer, event: Mapping[str, Any]) -> None:
        action = event.get("Action") or event.get("status")
        attributes = event.get("Actor", {}).get("Attributes", {})
        when = event.get("timeNano", 0) / 1e9 or time.time()
        if action == "create":
            record.created = when
        elif action == "start":
            record.started = when
        elif action == "die":
            record.died = when
            code = attributes.get("exitCode", attributes.get("containerExitCode"))
            record.exit_code = int(code) if code not in (None, "") else None
