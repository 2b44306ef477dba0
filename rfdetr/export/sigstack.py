"""Keep the calling thread's alternate signal stack across OpenVINO calls (Linux).

OpenVINO's CPU plugin (``SigAltStackSetup``, ``src/plugins/intel_cpu/src/sigstack_manager.cpp``,
openvinotoolkit/openvino#11894; still in the 2026.4.1 wheel) installs an ``mmap``-ed stack with
``sigaltstack`` on its creating thread and restores the previous one on destruction only if its
own is still installed there, then unmaps it. Two plugins destroyed in creation order, or one
destroyed from another thread, leave the thread's stack pointing at unmapped memory: the next
signal handled on it (Python's ``SA_ONSTACK`` handlers: ``SIGINT``, a DataLoader's ``SIGCHLD``)
is a SIGSEGV or heap corruption (``benchmarks/openvino_sigaltstack.py``). :func:`keep_signal_stack`
puts the previous stack back right after the plugin is created, so the plugin's is never installed.
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

_SS_DISABLE = 2  # <bits/ss_flags.h>
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
    """Restore this thread's alternate signal stack if the block changed it (failure: logged)."""
    before = current_signal_stack()
    try:
        yield
    finally:
        if before is not None and current_signal_stack() != before:
            address, size = before  # (0, 0): there was none, so disable the plugin's
            restore = _Stack(address, 0 if size else _SS_DISABLE, size)
            if _sigaltstack()(ctypes.byref(restore), None) != 0:
                logger.warning(
                    "could not restore the alternate signal stack after OpenVINO changed it: %s",
                    os.strerror(ctypes.get_errno()),
                )
