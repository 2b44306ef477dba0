"""OpenVINO's CPU plugin leaves the thread's alternate signal stack pointing at unmapped memory.

Standalone (openvino and numpy only, no rfdetr import unless ``--guard``); Linux x86-64/aarch64.
Two ``ov.Core`` objects each compile a one-op model for ``CPU`` (each creates a CPU plugin, which
installs its own ``mmap``\\ed alternate stack on this thread and saves the previous one); deleting
them in creation order makes the second plugin's destructor re-install the first plugin's stack,
already unmapped. A Python ``SIGCHLD`` handler (torch's DataLoader installs one when it starts
workers; Python installs every handler with ``SA_ONSTACK``) then turns the exit of any child
process into a SIGSEGV of this one (si_code SI_KERNEL, address 0): the kernel cannot write the
signal frame. Had something been mapped there meanwhile, the frame would have overwritten it.

Prints one line per step (the alternate stack's address and whether it is mapped), then runs a
child process; without ``--guard`` the script dies with SIGSEGV (exit status 139 from a shell,
-11 from :mod:`subprocess`). ``--guard`` compiles under
:func:`rfdetr.export.sigstack.keep_signal_stack` (the workaround rfdetr uses) and survives.

Usage: python benchmarks/openvino_sigaltstack.py [--guard]
"""

from __future__ import annotations

import argparse
import ctypes
import faulthandler
import gc
import signal
import subprocess
import sys
from contextlib import nullcontext
from ctypes import c_int, c_size_t, c_void_p
from typing import Any


class _Stack(ctypes.Structure):
    _fields_ = [("ss_sp", c_void_p), ("ss_flags", c_int), ("ss_size", c_size_t)]


def altstack() -> str:
    """This thread's alternate signal stack and the mapping (``/proc/self/maps``) it lies in."""
    now = _Stack()
    ctypes.CDLL(None).sigaltstack(None, ctypes.byref(now))
    if now.ss_flags & 2 or not now.ss_sp:  # SS_DISABLE
        return "none"
    with open("/proc/self/maps") as maps:
        for line in maps:
            low, high = (int(x, 16) for x in line.split()[0].split("-"))
            if low <= now.ss_sp < high:
                return f"{now.ss_sp:#x} size {now.ss_size} mapped {line.split()[1]}"
    return f"{now.ss_sp:#x} size {now.ss_size} UNMAPPED"


def compile_relu(ov: Any, guard: Any) -> tuple[Any, Any]:
    """A fresh ``ov.Core`` and a one-op model compiled on it for ``CPU``."""
    import numpy as np
    import openvino.opset13 as ops

    param = ops.parameter([1, 4], np.float32)
    core = ov.Core()
    with guard():
        return core, core.compile_model(ov.Model([ops.relu(param)], [param]), "CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guard", action="store_true", help="compile under keep_signal_stack")
    args = parser.parse_args()
    import openvino as ov

    if args.guard:
        from rfdetr.export.sigstack import keep_signal_stack as guard
    else:
        guard = nullcontext
    faulthandler.enable()  # as pytest does: this thread gets Python's alternate stack
    print(f"openvino {ov.__version__}, guard {args.guard}", flush=True)
    print(f"start:          {altstack()}", flush=True)
    first = compile_relu(ov, guard)
    print(f"first compiled: {altstack()}", flush=True)
    second = compile_relu(ov, guard)
    print(f"second compiled: {altstack()}", flush=True)
    del first
    gc.collect()
    print(f"first deleted:  {altstack()}", flush=True)
    del second
    gc.collect()
    print(f"second deleted: {altstack()}", flush=True)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # as torch's DataLoader does with workers
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    print("a child exited and the SIGCHLD handler ran: survived", flush=True)


if __name__ == "__main__":
    main()
