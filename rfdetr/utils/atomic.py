"""The one home of atomic file writes: a fsynced temporary ``.<name>.<random>.tmp`` renamed over
the target (removed on failure). Every rewrite is a rename, so a :func:`link_or_copy` name keeps
its content. No torch here: checkpoints pass ``torch.save`` as content.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TMP_SUFFIX = ".tmp"


def write_atomic(
    path: str | os.PathLike[str],
    content: bytes | Callable[[BinaryIO], object],
    *,
    what: str = "file",
    error: Callable[[str], Exception] | None = None,
) -> Path:
    """Write ``content`` (bytes, or ``content(handle)`` writing them) to ``path`` atomically.

    The folder is created; ``handle.name`` is the temporary's path.

    Raises:
        error(message): ``error`` was given and the write failed with an OSError (or one that
            torch's zip writer wrapped in a RuntimeError): one line naming ``path``, ``what``
            and the errno name (e.g. ENOSPC). Otherwise what the write raised propagates.
    """
    dest = Path(path).expanduser()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = ""
    try:  # open(), not mkstemp: the file gets the umask's mode (mkstemp's is 0600)
        with open(dest.parent / f".{dest.name}.{secrets.token_hex(8)}{TMP_SUFFIX}", "xb") as handle:
            tmp = handle.name
            handle.write(content) if isinstance(content, bytes) else content(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, dest)
    except (OSError, RuntimeError) as failure:
        err: BaseException | None = failure  # torch's zip writer wraps the OSError: find it
        while err is not None and not isinstance(err, OSError):
            err = err.__cause__ or err.__context__
        if error is None or not isinstance(err, OSError):
            raise
        code = errno.errorcode.get(err.errno or 0, "error")
        hint = f"; free space in {dest.parent}" if err.errno == errno.ENOSPC else ""
        raise error(
            f"{dest}: cannot write {what}: {code} ({err.strerror or err}){hint}; "
            "the previous file is unchanged"
        ) from None
    finally:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
    return dest


def link_or_copy(
    source: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    what: str = "file",
    error: Callable[[str], Exception] | None = None,
) -> Path:
    """Give the finished file ``source`` a second name ``path``: a hard link, or a copy where
    links fail (another file system, a FUSE bucket); written and raising as :func:`write_atomic`.
    """

    def fill(handle: BinaryIO) -> None:
        try:
            os.unlink(handle.name)  # os.link will not replace: the name is ours
            os.link(source, handle.name)
        except OSError:
            with open(source, "rb") as src, open(handle.name, "wb") as copy:
                shutil.copyfileobj(src, copy)
                copy.flush()
                os.fsync(copy.fileno())

    return write_atomic(path, fill, what=what, error=error)
