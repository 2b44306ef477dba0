"""Device, precision and random-state handling for training.

Precision: autocast bf16 or fp16 on CUDA (a ``GradScaler`` only for fp16, whose range needs
it). On the CPU, fp32 unless ``amp_dtype="bf16"`` is asked for explicitly on a CPU with native
bf16 arithmetic (AVX512-BF16 or AMX): there bf16 matmuls run at two to three times the fp32 rate,
where a CPU without it would emulate them and run slower than fp32.
Random state: the torch (CPU and CUDA), Python and NumPy generators are captured as plain data
for checkpoints, so a resumed run continues exactly where the saved one stopped.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rfdetr.run_config import ConfigError, TrainConfig
from rfdetr.training.distributed import DistInfo

logger = logging.getLogger(__name__)


def resolve_device(requested: str | None, info: DistInfo) -> torch.device:
    """The training device: as requested, else CUDA when available, else the CPU.

    Under ``torchrun`` on CUDA each process takes the GPU of its local rank.
    """
    if requested is None:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ConfigError(f"device '{requested}': not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{requested}': CUDA is not available on this machine")
        if info.enabled:
            device = torch.device("cuda", info.local_rank)
    return device


@dataclass(frozen=True)
class Precision:
    """How forward passes run: ``dtype`` None means fp32 without autocast."""

    device_type: str
    dtype: torch.dtype | None = None

    @property
    def needs_scaler(self) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 and fp32 do not."""
        return self.dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The autocast context of a forward pass (a no-op for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    @property
    def name(self) -> str:
        """``fp32``, ``bf16`` or ``fp16``."""
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_precision(train: TrainConfig, device: torch.device) -> Precision:
    """``amp``/``amp_dtype`` for ``device``.

    CUDA: bf16 where the GPU supports it, else fp16 (``amp_dtype`` forces one). CPU: fp32,
    or bf16 autocast when ``amp_dtype="bf16"`` and the CPU has native bf16 (else fp32, with a
    warning: emulated bf16 is slower than fp32).
    """
    if device.type == "cpu" and train.amp and train.amp_dtype == "bf16":
        if cpu_has_native_bf16():
            logger.info("training with bf16 autocast on the CPU (native bf16 arithmetic)")
            return Precision("cpu", torch.bfloat16)
        logger.warning(
            "amp_dtype bf16: this CPU has no native bf16 (AVX512-BF16 or AMX), where bf16 is "
            "slower than fp32; training in fp32"
        )
        return Precision("cpu")
    if device.type != "cuda" or not train.amp:
        if train.amp and device.type == "cpu":
            logger.info("training in fp32 on the CPU (set amp_dtype: bf16 for bf16 autocast)")
        return Precision(device.type)
    if train.amp_dtype == "fp16":
        return Precision("cuda", torch.float16)
    if train.amp_dtype == "bf16" or torch.cuda.is_bf16_supported():
        return Precision("cuda", torch.bfloat16)
    return Precision("cuda", torch.float16)


def seed_everything(seed: int) -> None:
    """Seed torch (all devices), Python's ``random`` and NumPy."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def capture_rng_state() -> dict[str, Any]:
    """Every global generator's state as plain data (tensors, ints, lists)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def eval_mode(*modules: torch.nn.Module) -> Iterator[None]:
    """Put modules in eval mode for the block, restoring their training flags after."""
    flags = [module.training for module in modules]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for module, flag in zip(modules, flags, strict=True):
            module.train(flag)


# glibc mallopt parameters and their defaults (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536


def _glibc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None
    except OSError:
        return None


@contextlib.contextmanager
def tuned_allocator(device: torch.device) -> Iterator[None]:
    """Keep freed host memory for reuse while training on the CPU (glibc only).

    By default glibc serves every large block (activations of tens of MB) with a fresh
    ``mmap`` and unmaps it when freed, so each training step page-faults and zero-fills all
    of its activation memory again; at Nano sizes that is a large share of a CPU step. Taking
    large blocks from the heap and never trimming it makes steps reuse the same pages. The
    numbers computed are unchanged. The process keeps its peak memory until training ends;
    the defaults are restored (and free memory returned) afterwards.
    """
    libc = _glibc() if device.type == "cpu" else None
    if libc is None:
        yield
        return
    tune_allocator(device)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)


def tune_allocator(device: torch.device) -> bool:
    """Apply the settings of :func:`tuned_allocator` for the rest of the process.

    Returns:
        True when applied (CPU device, glibc), else False.
    """
    libc = _glibc() if device.type == "cpu" else None
    if libc is None:
        return False
    applied = libc.mallopt(_M_MMAP_MAX, 0) == 1
    applied &= libc.mallopt(_M_TRIM_THRESHOLD, 2**62) == 1
    logger.debug("glibc allocator tuned for CPU training: %s", applied)
    return bool(applied)
