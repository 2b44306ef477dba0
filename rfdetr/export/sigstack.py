"""Keep the calling thread's alternate signal stack across OpenVINO calls (Linux).

OpenVINO's CPU plugin (``SigAltStackSetup`` in ``src/plugins/intel_cpu/src/sigstack_manager.cpp``,
added for AMX by openvinotoolkit/openvino#11894; the pip wheel 2026.4.1 still does it) ``mmap``\\s
a stack when it is created and installs it with ``sigaltstack`` on the thread that created it,
saving that thread's previous one. Its destructor puts the saved stack back only when its own is
still installed on the thread that runs the destructor, then ``munmap``\\s its own. Two plugins
destroyed in creation order (two ``ov.Core`` objects, e.g. two :class:`OpenVINOModel`\\s), or one
destroyed from another thread, leave a thread's alternate stack pointing at unmapped memory, or
at whatever is mapped there next. Every later signal handled on that stack (Python installs its
handlers with ``SA_ONSTACK``: ``SIGINT``, and the ``SIGCHLD`` handler of a torch DataLoader with
workers) then either kills the process with SIGSEGV (si_code ``SI_KERNEL``, address 0, raised
when the kernel cannot write the signal frame) or writes the frame into someone else's memory:
heap corruption that faults later, elsewhere. ``benchmarks/openvino_sigaltstack.py`` shows it.

:func:`keep_signal_stack` puts the thread's previous stack back right after the call that
creates the plugin: the plugin's stack is then never installed, and its destructor only unmaps it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from ctypes import c_int, c_size_t, c_void_p

logger = logging.getLogger(__name__)

_SS_ONSTACK, _SS_DISABLE = 1, 2  # <bits/ss_flags.h>
# stack_t is {ss_sp, ss_flags, ss_size} on these; MIPS orders it differently.
_LAYOUT_OK = sys.platform.startswith("linux") and platform.machine() in {"x86_64", "aarch64"}


class _Stack(ctypes.Structure):
    _fields_ = [("ss_sp", c_void_p), ("ss_flags", c_int), ("ss_size", c_size_t)]


def _sigaltstack() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not _LAYOUT_OK:
        return None
    function = ctypes.CDLL(None, use_errno=True).sigaltstack
    function.argtypes = [ctypes.POINTER(_Stack), ctypes.POINTER(_Stack)]
    function.restype = ctypes.c_int
    return function


def current_signal_stack() -> tuple[int, int] | None:
    """``(address, size)`` of this thread's alternate signal stack; ``(0, 0)`` when it has none;
    None where this module does not look (not Linux x86-64 / aarch64)."""
    sigaltstack = _sigaltstack()
    if sigaltstack is None:
        return None
    now = _Stack()
    if sigaltstack(None, ctypes.byref(now)) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return (0, 0) if now.ss_flags & _SS_DISABLE else (now.ss_sp or 0, now.ss_size)


@contextmanager
def keep_signal_stack() -> Iterator[None]:
    """Put this thread's alternate signal stack back as it was before the block, if the block
    changed it (see the module docstring); a failure to do so is logged, not raised."""
    sigaltstack = _sigaltstack()
    if sigaltstack is None:
        yield
        return
    before = _Stack()
    if sigaltstack(None, ctypes.byref(before)) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    try:
        yield
    finally:
        now = _Stack()
        changed = sigaltstack(None, ctypes.byref(now)) != 0 or (
            (now.ss_sp, now.ss_flags & _SS_DISABLE) != (before.ss_sp, before.ss_flags & _SS_DISABLE)
        )
        if changed:
            restore = _Stack(before.ss_sp, before.ss_flags & ~_SS_ONSTACK, before.ss_size)
            if sigaltstack(ctypes.byref(restore), None) != 0:
                logger.warning(
                    "could not restore the alternate signal stack after OpenVINO changed it: %s",
                    os.strerror(ctypes.get_errno()),
                )
