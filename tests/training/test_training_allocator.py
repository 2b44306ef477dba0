"""The CPU allocator tuning keeps freed memory in the heap (glibc ``mallopt``).

glibc's ``mallopt(int param, int value)`` (malloc/malloc.c, ``__libc_mallopt``) takes a C ``int``;
ctypes converts an unannotated Python int by truncation, so a threshold of ``2**62`` reached glibc
as 0 and made every ``free`` trim the heap, the opposite of the intent. The test runs in a fresh
process (the setting is process-wide) and reads the program break with ``sbrk(0)``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")

_SCRIPT = textwrap.dedent(
    """
    import ctypes, json
    import torch
    from rfdetr.training.runtime import tune_allocator
    applied = tune_allocator(torch.device("cpu"))
    libc = ctypes.CDLL("libc.so.6")
    libc.sbrk.restype = libc.malloc.restype = ctypes.c_void_p
    libc.sbrk.argtypes = [ctypes.c_ssize_t]
    libc.malloc.argtypes, libc.free.argtypes = [ctypes.c_size_t], [ctypes.c_void_p]
    before = libc.sbrk(0)
    block = libc.malloc(200 << 20)  # larger than any free space the heap may hold
    grown = libc.sbrk(0)
    libc.free(block)
    after = libc.sbrk(0)
    print(json.dumps({"applied": applied, "grew": grown - before, "shrank": grown - after}))
    """
)


def test_tuned_allocator_keeps_freed_memory() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["applied"] is True
    # mmap disabled: the block came from the heap, which had to grow for most of it (free space
    # already at its top may hold part of it)
    assert result["grew"] >= 100 << 20
    assert result["shrank"] == 0  # and freeing it did not trim the heap
