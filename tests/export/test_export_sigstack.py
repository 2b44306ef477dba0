"""OpenVINO's CPU plugin must not leave a dangling alternate signal stack (rfdetr.export.sigstack).

The plugin (``SigAltStackSetup``, openvinotoolkit/openvino ``src/plugins/intel_cpu/src/
sigstack_manager.cpp``) installs an ``mmap``\\ed alternate stack on the thread that creates it and,
when destroyed out of order, re-installs one it already unmapped. Then the next signal handled on
it kills the process (SIGSEGV, SI_KERNEL, address 0) or overwrites memory: the one-process test
run of tests/data ... tests/fuzz died so, at a child's exit, after tests/data's DataLoader had
installed its SIGCHLD handler and tests/export had compiled several OpenVINO models. A crash
cannot be caught in-process, so the scenarios run in child processes; their exit status is
asserted.
"""

from __future__ import annotations

import ast
import ctypes
import os
import signal
import subprocess
import sys
from ctypes import c_int, c_size_t, c_void_p
from pathlib import Path

import pytest

from rfdetr.export.sigstack import current_signal_stack, keep_signal_stack

pytest.importorskip("openvino", reason="the openvino extra is not installed")
if current_signal_stack() is None:
    pytest.skip("alternate signal stacks are only inspected on Linux x86-64/aarch64",
                allow_module_level=True)  # fmt: skip

REPO = Path(__file__).resolve().parents[2]
REPRODUCER = REPO / "benchmarks" / "openvino_sigaltstack.py"
TWO_MODELS = """
import faulthandler, gc, signal, subprocess, sys
from rfdetr.export.openvino import OpenVINOModel
from rfdetr.export.sigstack import current_signal_stack
faulthandler.enable()  # as pytest does: this thread gets Python's alternate stack
before = current_signal_stack()
first, second = OpenVINOModel(sys.argv[1]), OpenVINOModel(sys.argv[1])
del first  # creation order: the second plugin's destructor re-installed the first one's stack
gc.collect()
del second
gc.collect()
signal.signal(signal.SIGCHLD, lambda *_: None)  # torch's DataLoader installs one with workers
subprocess.run([sys.executable, "-c", "pass"], check=True)  # its exit: a SIGCHLD to handle
print(repr((before, current_signal_stack())))  # the last line
"""


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=300,
                          env=env, cwd=REPO)  # fmt: skip


def test_two_openvino_models_dropped_in_creation_order_then_a_child_exits(
    detector_onnx: Path, tmp_path: Path
) -> None:
    from rfdetr.export.openvino import export_openvino

    xml = export_openvino(detector_onnx, tmp_path / "detector.xml")
    result = _run("-c", TWO_MODELS, str(xml))
    assert result.returncode == 0, (result.returncode, result.stderr[-3000:])  # -11: SIGSEGV
    before, after = ast.literal_eval(result.stdout.splitlines()[-1])
    assert after == before  # the thread's own stack (faulthandler's), not the plugin's


def test_the_standalone_reproducer_crashes_without_the_guard_and_not_with_it() -> None:
    """Documents the upstream bug (openvino pip 2026.4.1): when this stops crashing, OpenVINO
    fixed it and :func:`keep_signal_stack` can go."""
    bare = _run(str(REPRODUCER))
    assert "second deleted:" in bare.stdout and "UNMAPPED" in bare.stdout.splitlines()[-1], bare
    assert bare.returncode == -signal.SIGSEGV, (bare.returncode, bare.stdout, bare.stderr[-2000:])
    guarded = _run(str(REPRODUCER), "--guard")
    assert guarded.returncode == 0, (guarded.returncode, guarded.stderr[-2000:])
    assert "UNMAPPED" not in guarded.stdout and "survived" in guarded.stdout


class _Stack(ctypes.Structure):
    _fields_ = [("ss_sp", c_void_p), ("ss_flags", c_int), ("ss_size", c_size_t)]


def _install(memory: ctypes.Array[ctypes.c_char] | None) -> None:
    stack = _Stack(None, 2, 0) if memory is None else _Stack(ctypes.addressof(memory), 0,
                                                             ctypes.sizeof(memory))  # fmt: skip
    assert ctypes.CDLL(None).sigaltstack(ctypes.byref(stack), None) == 0


@pytest.mark.parametrize("had_one", [True, False], ids=["python-stack", "no-stack"])
def test_keep_signal_stack_puts_back_what_the_block_replaced(had_one: bool) -> None:
    before = current_signal_stack()
    own = ctypes.create_string_buffer(64 * 1024)
    other = ctypes.create_string_buffer(64 * 1024)
    try:
        _install(own if had_one else None)
        expected = current_signal_stack()
        assert expected == ((ctypes.addressof(own), ctypes.sizeof(own)) if had_one else (0, 0))
        with keep_signal_stack():
            _install(other)  # what the CPU plugin's constructor does
            assert current_signal_stack() == (ctypes.addressof(other), ctypes.sizeof(other))
        assert current_signal_stack() == expected
    finally:  # leave this pytest process's stack as it was (faulthandler's)
        restore = _Stack(before[0] or None, 0 if before[0] else 2, before[1])  # type: ignore[index]
        assert ctypes.CDLL(None).sigaltstack(ctypes.byref(restore), None) == 0
