"""Keep a training run's resume files in the object store while it trains.

On Kubeflow a retried step runs in a new pod whose output folder starts empty, so a resume file
written only there dies with the pod. :class:`CheckpointMirror` copies the resume point
(``checkpoint.pth``), the best-model files and ``log.txt`` to ``<prefix>/`` every
``interval`` seconds and when training fails; the retried step restores them before training,
and :func:`rfdetr.training.loop.fit` resumes from ``checkpoint.pth``. After a successful run the
mirror is deleted (the step's output artifact holds everything).

Consistency: training writes the best files, then ``log.txt``, then ``checkpoint.pth`` (each
atomically, by rename). A sync hard-links (or copies) the files into a private snapshot, best
files first and ``checkpoint.pth`` last, and starts over when ``checkpoint.pth`` changed
meanwhile; it uploads in the same order. The mirror therefore never holds a ``checkpoint.pth``
newer than its best files.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rfdetr.storage import ObjectStore, download_prefix, parse_uri, upload_file
from rfdetr.storage.config import s3_errors
from rfdetr.storage.errors import ObjectNotFoundError, StorageError
from rfdetr.training import checkpoint as files

logger = logging.getLogger(__name__)

LOG_FILE = "log.txt"
# Upload order: everything the resume point refers to before the resume point itself.
MIRRORED: tuple[str, ...] = (
    files.BEST_REGULAR,
    files.BEST_EMA,
    files.BEST_TOTAL,
    LOG_FILE,
    files.LAST,
)
DEFAULT_INTERVAL_S = 60.0


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size


class CheckpointMirror:
    """Mirror of a run folder's resume files under an object-store prefix.

    Args:
        uri: ``s3://bucket/prefix`` (or ``minio://``) for this run; it must be unique to the run
            and stable across retries (the pipeline appends the run id).
        interval: seconds between background syncs while training.
        store: connection; default from the environment.
    """

    def __init__(
        self, uri: str, interval: float = DEFAULT_INTERVAL_S, store: ObjectStore | None = None
    ) -> None:
        self.uri = parse_uri(uri)
        self.interval = interval
        self.store = store or ObjectStore.from_env()
        self._uploaded: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def restore(self, run_dir: str | Path) -> bool:
        """Download the mirror into ``run_dir`` unless it already has ``checkpoint.pth``.

        Returns True when a resume point was restored.
        """
        folder = Path(run_dir)
        if (folder / files.LAST).is_file():
            return False
        try:
            result = download_prefix(self.uri, folder, store=self.store)
        except ObjectNotFoundError:
            return False  # first attempt: nothing mirrored yet
        if files.LAST not in result.files:
            logger.warning("%s holds no %s; starting from scratch", self.uri, files.LAST)
            return False
        for rel in result.files:
            self._uploaded[rel] = _signature(folder / rel) or (0, 0)
        logger.info("restored the resume point of a previous attempt from %s", self.uri)
        return True

    def sync(self, run_dir: str | Path) -> int:
        """Upload the files that changed since the last sync; returns how many were uploaded."""
        folder = Path(run_dir)
        with self._lock, tempfile.TemporaryDirectory(prefix=".mirror-", dir=folder.parent) as tmp:
            snapshot = self._snapshot(folder, Path(tmp))
            count = 0
            for name, signature in snapshot:
                if self._uploaded.get(name) == signature:
                    continue
                upload_file(Path(tmp, name), self.uri.child(name), store=self.store)
                self._uploaded[name] = signature
                count += 1
        if count:
            logger.info("mirrored %d file(s) of %s to %s", count, folder, self.uri)
        return count

    def _snapshot(self, folder: Path, dest: Path) -> list[tuple[str, tuple[int, int]]]:
        """Link or copy the mirrored files into ``dest``: a set consistent with checkpoint.pth."""
        for _ in range(10):
            before = _signature(folder / files.LAST)
            taken = []
            for name in MIRRORED:
                source, target = folder / name, dest / name
                target.unlink(missing_ok=True)
                signature = _signature(source)
                if signature is None:
                    continue
                try:
                    os.link(source, target)
                except FileNotFoundError:
                    continue  # replaced between stat and link; the retry below sees it
                except OSError:  # another file system, or links not allowed: copy
                    shutil.copy2(source, target)
                taken.append((name, signature))
            if _signature(folder / files.LAST) == before:
                return taken
        raise StorageError(f"{folder}: {files.LAST} kept changing; cannot take a snapshot")

    def clear(self) -> None:
        """Delete the mirror (after a successful run)."""
        client = self.store.client
        with s3_errors(self.store, "deleting the checkpoint mirror", self.uri):
            for obj in client.list_objects(self.uri.bucket, self.uri.prefix, recursive=True):
                client.remove_object(self.uri.bucket, obj.object_name)
        self._uploaded.clear()

    @contextmanager
    def watching(self, run_dir: str | Path) -> Iterator[CheckpointMirror]:
        """Sync in the background while the block runs; a last sync when the block fails.

        A failed background sync is logged and retried at the next interval: it must never
        stop training.
        """
        stop = threading.Event()

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
        except BaseException:
            stop.set()
            thread.join()
            try:
                self.sync(run_dir)  # the retry resumes from the latest epoch
            except (StorageError, OSError) as exc:  # keep the training error, not this one
                logger.warning("last checkpoint mirror sync failed: %s", exc)
            raise
        stop.set()
        thread.join()
