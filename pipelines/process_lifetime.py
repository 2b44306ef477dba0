"""Server processes that cannot outlive the Python process that started them.

A parent killed by SIGKILL, a crash or SIGTERM's default action runs no ``finally`` nor
``atexit``, and a ``weed mini`` it started kept running (issue 13). A child started with
:func:`die_with_parent` gets SIGKILL from the kernel when its parent *thread* ends
(``prctl(PR_SET_PDEATHSIG)``, prctl(2)), so it must be started from the main thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: the child gets SIGKILL when we end.
    Raises RuntimeError off the main thread or where the C library has no ``prctl`` (not Linux)."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "a server tied to this process must be started from the main thread "
            "(PR_SET_PDEATHSIG follows the thread that forks the child)"
        )
    prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)  # looked up before fork
    if prctl is None:
        raise RuntimeError("prctl(PR_SET_PDEATHSIG) is not available on this system")
    parent = os.getpid()

    def preexec() -> None:  # runs in the child between fork and exec
        if prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before prctl: nobody owns this child
            os._exit(1)

    return preexec


def signal_group(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group led by ``pid`` (a ``start_new_session`` child), else to
    ``pid`` alone; a process that is already gone is not an error."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (reaps it first when it is our own exited child; a zombie is dead)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
