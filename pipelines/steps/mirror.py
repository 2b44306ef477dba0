"""Keep a training run's resume files in the object store while it trains, since a retried step
runs in a new pod whose folder starts empty (what is kept when: docs/deploy.md, "Checkpoint
mirrors").

Consistency: training writes the best files, then ``log.txt``, then ``checkpoint.pth`` (each by
rename). A sync links the files into a private snapshot, ``checkpoint.pth`` last, starts over
when it changed meanwhile, and uploads in that order: the mirror never holds a ``checkpoint.pth``
newer than its best files.
"""

from __future__ import annotations

import logging
import re
import signal
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from rfdetr import checkpoints as files
from rfdetr.storage import ObjectStore, download_file, parse_uri, upload_file
from rfdetr.storage.config import s3_errors
from rfdetr.storage.errors import ObjectNotFoundError, StorageError
from rfdetr.training.loggers import LOG_FILE
from rfdetr.utils.atomic import link_or_copy

logger = logging.getLogger(__name__)

# Upload order: everything the resume point refers to before the resume point itself.
MIRRORED: tuple[str, ...] = (
    files.BEST_REGULAR,
    files.BEST_EMA,
    files.BEST_TOTAL,
    LOG_FILE,
    files.LAST,
)
_PERIODIC_NAME = r"checkpoint_\d+\.pth"
SIGTERM_EXIT = 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM


class Terminated(SystemExit):
    """SIGTERM arrived while training (raised in the main thread by :meth:`watching`)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(SIGTERM_EXIT)


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size


def mirror_folder(run_id: str) -> str:
    """A key segment for the run: its id, else a fresh random one (no retry can find it)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", run_id).strip(".-")
    return cleaned or f"run-{uuid.uuid4().hex[:12]}"


class CheckpointMirror:
    """Mirror of a run folder's resume files under an object-store prefix.

    Args:
        uri: ``s3://bucket/prefix`` (or ``minio://``) for this run; it must be unique to the run
            and stable across retries (:meth:`of_run`).
        interval: seconds between background syncs while training.
    """

    def __init__(self, uri: str, interval: float = 60.0) -> None:
        self.uri = parse_uri(uri)
        self.interval = interval
        self.store = ObjectStore.from_env()
        self._uploaded: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    @classmethod
    def of_run(cls, mirror_root: str, run_id: str) -> CheckpointMirror:
        """The train step's mirror of a pipeline run: ``<mirror_root>/<run id>/train``."""
        return cls(f"{mirror_root.rstrip('/')}/{mirror_folder(run_id)}/train")

    def restore(self, run_dir: str | Path) -> bool:
        """Download the resume set into ``run_dir`` unless it has ``checkpoint.pth``; True when a
        resume point was restored."""
        folder = Path(run_dir)
        if (folder / files.LAST).is_file():
            return False
        restored = []
        for name in MIRRORED:  # the resume set only: periodic checkpoints stay in the mirror
            try:
                download_file(self.uri.child(name), folder / name, store=self.store)
            except ObjectNotFoundError:
                continue  # first attempt: nothing mirrored yet; or no EMA file
            restored.append(name)
        if files.LAST not in restored:
            if restored:
                logger.warning("%s holds no %s; starting from scratch", self.uri, files.LAST)
            return False
        for rel in restored:
            self._uploaded[rel] = _signature(folder / rel) or (0, 0)
        logger.info("restored the resume point of a previous attempt from %s", self.uri)
        return True

    def sync(self, run_dir: str | Path) -> int:
        """Upload the files that changed since the last sync; returns how many were uploaded."""
        folder = Path(run_dir)
        with self._lock, tempfile.TemporaryDirectory(prefix=".mirror-", dir=folder.parent) as tmp:
            snapshot = self._snapshot(folder, Path(tmp))
            changed = [(name, sig) for name, sig in snapshot if self._uploaded.get(name) != sig]
            for name, signature in changed:
                upload_file(Path(tmp, name), self.uri.child(name), store=self.store)
                self._uploaded[name] = signature
        if changed:
            logger.info("mirrored %d file(s) of %s to %s", len(changed), folder, self.uri)
        return len(changed)

    def _snapshot(self, folder: Path, dest: Path) -> list[tuple[str, tuple[int, int]]]:
        """Link the mirrored files into ``dest`` (module docstring)."""
        for _ in range(10):
            before = _signature(folder / files.LAST)
            taken = []
            periodic = sorted(
                p.name for p in folder.iterdir() if re.fullmatch(_PERIODIC_NAME, p.name)
            )
            for name in (*MIRRORED[:-1], *periodic, files.LAST):
                source, target = folder / name, dest / name
                signature = _signature(source)
                if signature is None:
                    continue
                try:
                    link_or_copy(source, target)
                except FileNotFoundError:
                    continue  # replaced between stat and link; the retry below sees it
                taken.append((name, signature))
            if _signature(folder / files.LAST) == before:
                return taken
        raise StorageError(f"{folder}: {files.LAST} kept changing; cannot take a snapshot")

    def clear(self, keep: tuple[str, ...] = ()) -> None:
        """Delete the mirror, but for the file names matched by ``keep`` (regexes)."""
        client = self.store.client
        with s3_errors(self.store, "deleting the checkpoint mirror", self.uri):
            for obj in client.list_objects(self.uri.bucket, self.uri.prefix, recursive=True):
                name = obj.object_name[len(self.uri.prefix) :]
                if not any(re.fullmatch(pattern, name) for pattern in keep):
                    client.remove_object(self.uri.bucket, obj.object_name)
                    self._uploaded.pop(name, None)

    def finish(self, run_dir: str | Path, *, sync: bool = True) -> None:
        """After success: a last sync (unless ``sync`` is False: another process trained),
        then keep only the resume point and the periodic checkpoints (module docstring)."""
        if sync:
            self.sync(run_dir)
        self.clear(keep=(re.escape(files.LAST), _PERIODIC_NAME))

    @contextmanager
    def watching(self, run_dir: str | Path) -> Iterator[CheckpointMirror]:
        """Sync every ``interval`` while the block runs (a failed sync is logged and retried, never
        stopping training), and once more when it fails. In the main thread SIGTERM raises
        :class:`Terminated`, so that last sync runs and the process exits :data:`SIGTERM_EXIT`.
        """
        stop = threading.Event()
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _raise_terminated)

        def loop() -> None:
            while not stop.wait(self.interval):
                try:
                    self.sync(run_dir)
                except (StorageError, OSError) as exc:
                    logger.warning("checkpoint mirror sync failed (will retry): %s", exc)

        thread = threading.Thread(target=loop, name="checkpoint-mirror", daemon=True)
        thread.start()
        try:
            yield self
        except BaseException as exc:
            if isinstance(exc, Terminated):
                logger.warning("SIGTERM: mirroring the resume point before exiting")
                signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut it
            stop.set()
            thread.join()
            try:
                self.sync(run_dir)  # the retry resumes from the latest epoch
            except (StorageError, OSError) as err:  # keep the training error, not this one
                logger.warning("last checkpoint mirror sync failed: %s", err)
            raise
        finally:
            stop.set()
            thread.join()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def prune(
    root: str, older_than: timedelta, *, now: datetime | None = None, dry_run: bool = False
) -> list[str]:
    """Delete the run folders (``<root>/<run id>/``) whose newest object is older than
    ``older_than`` at ``now`` (default: the current time); returns their URIs."""
    uri, store = parse_uri(root), ObjectStore.from_env()
    cutoff = (now or datetime.now(timezone.utc)) - older_than
    runs: dict[str, list[tuple[str, datetime]]] = {}
    client = store.client
    with s3_errors(store, "listing the checkpoint mirrors", uri):
        for obj in client.list_objects(uri.bucket, uri.prefix, recursive=True):
            run = obj.object_name[len(uri.prefix) :].split("/", 1)[0]
            runs.setdefault(run, []).append((obj.object_name, obj.last_modified))
    old = sorted(run for run, objs in runs.items() if max(t for _, t in objs) < cutoff)
    with s3_errors(store, "deleting old checkpoint mirrors", uri):
        for run in [] if dry_run else old:
            for key, _ in runs[run]:
                client.remove_object(uri.bucket, key)
    return [str(uri.child(run)) for run in old]
