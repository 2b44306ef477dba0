"""Training runtime: device, precision, TF32, the CPU allocator, and the random states that a
checkpoint saves as plain data so a resumed run continues exactly where the saved one stopped."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rfdetr.config import ConfigError, TrainConfig
from rfdetr.training.distributed import DistInfo

logger = logging.getLogger(__name__)


# NVIDIA_VISIBLE_DEVICES values that assign no particular GPU: CUDA base images set "all" with
# or without a GPU; NVIDIA's Kubernetes device plugin sets the allocated GPUs (CDI-only: nothing).
_NO_GPU_ASSIGNED = {"", "all", "none", "void"}
_ONE_PROCESS = DistInfo()


def assigned_gpus() -> str | None:
    """``NVIDIA_VISIBLE_DEVICES`` when it assigns particular GPUs, else None."""
    value = os.environ.get("NVIDIA_VISIBLE_DEVICES", "").strip()
    return None if value.lower() in _NO_GPU_ASSIGNED else value


def _cuda_unusable(what: str) -> ConfigError:
    build = f"torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}"
    return ConfigError(
        f"{what}, but CUDA is not usable here ({build}: no GPU visible, or a driver too old for "
        "this CUDA); fix the GPU node or driver, or set device: cpu to run on the CPU"
    )


def resolve_device(
    requested: str | torch.device | None, info: DistInfo = _ONE_PROCESS
) -> torch.device:
    """The training device: as requested, else CUDA when available, else the CPU.

    Under ``torchrun`` on CUDA each process takes the GPU of its local rank.

    Raises:
        ConfigError: not a device, or a GPU requested (``device`` cuda, or GPUs assigned
            through ``NVIDIA_VISIBLE_DEVICES``) that CUDA cannot use: never a silent CPU run.
    """
    if requested is None:
        if torch.cuda.is_available():
            requested = "cuda"
        elif assigned_gpus() is not None:
            raise _cuda_unusable(f"NVIDIA_VISIBLE_DEVICES={assigned_gpus()} assigns a GPU")
        else:
            requested = "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ConfigError(f"device '{requested}': not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise _cuda_unusable(f"device '{requested}' asks for a GPU")
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


def cuda_has_native_bf16(device: torch.device) -> bool:
    """Whether ``device``'s GPU computes bf16 (and TF32) natively: compute capability >= 8.0.

    (``torch.cuda.is_bf16_supported()`` also counts the slow emulated bf16 of a T4 or V100.)
    """
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def configure_tf32(device: torch.device, enabled: bool = True) -> bool:
    """TF32 tensor cores for fp32 matmuls and convolutions on an Ampere or later GPU
    (results change at about 1e-3 relative); returns whether TF32 is now on.

    Process-wide, as torch's switches are. ``enabled`` False or ``RFDETR_TF32=0`` turn it off;
    a no-op off CUDA.
    """
    if device.type != "cuda":
        return False
    on = enabled and os.environ.get("RFDETR_TF32", "1") != "0" and cuda_has_native_bf16(device)
    # The legacy switches: mixing them with the newer ``fp32_precision`` API makes
    # ``torch.get_float32_matmul_precision()`` (read by torch.compile) raise.
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on
    logger.debug("TF32 for fp32 matmuls and convolutions on %s: %s", device, on)
    return on


def resolve_precision(train: TrainConfig, device: torch.device) -> Precision:
    """``amp``/``amp_dtype`` for ``device``.

    CUDA: bf16 from compute capability 8.0, else fp16 with a ``GradScaler`` (``amp_dtype``
    forces one). CPU: fp32, or bf16 autocast when ``amp_dtype="bf16"`` and the CPU has native
    bf16 (emulated bf16 is slower than fp32: a warning and fp32).
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
    native = cuda_has_native_bf16(device)
    if train.amp_dtype == "bf16":
        if not native:
            logger.warning(
                "amp_dtype bf16: %s has no native bf16 (compute capability < 8.0), where bf16 "
                "is emulated and slow; amp_dtype auto would use fp16",
                torch.cuda.get_device_name(device),
            )
        return Precision("cuda", torch.bfloat16)
    return Precision("cuda", torch.bfloat16 if native else torch.float16)


def check_compile(train: TrainConfig, device: torch.device) -> None:
    """Refuse ``compile`` on CUDA up front when Triton would find no C compiler.

    Triton compiles a C launcher per kernel with ``$CC``, else ``gcc`` or ``clang``
    (``triton/runtime/build.py``, ``_find_compiler``); without one the first compiled step fails
    deep inside torch.compile, after the datasets and model were built.

    Raises:
        ConfigError: ``compile`` is on, the device is CUDA and no C compiler is found.
    """
    if not train.compile or device.type != "cuda":
        return
    cc = os.environ.get("CC")
    if cc is not None:
        if shutil.which(cc) is None:
            raise ConfigError(f"compile: true needs a C compiler for Triton; CC={cc} is not found")
        return
    if shutil.which("gcc") is None and shutil.which("clang") is None:
        raise ConfigError(
            "compile: true on CUDA needs a C compiler for Triton (gcc or clang on the PATH, or "
            "CC); install one (e.g. apt-get install gcc) or set compile: false"
        )


def seed_everything(seed: int) -> None:
    """Seed torch (all devices), Python's ``random`` and NumPy."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _rng_cuda_device(device: torch.device) -> torch.device | None:
    if device.type != "cuda":
        return None
    return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())


def capture_rng_state(device: torch.device) -> dict[str, Any]:
    """Every generator this process uses, as plain data; on CUDA only ``device``'s (every
    visible GPU's could not be restored on fewer GPUs)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    cuda = _rng_cuda_device(device)
    if cuda is not None:
        state["cuda"] = torch.cuda.get_rng_state(cuda)
    return state


def restore_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Inverse of :func:`capture_rng_state`, onto ``device``'s CUDA generator.

    Older checkpoints hold every visible GPU's state: this device's entry is used (a warning
    when there is none).
    """
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    saved = state.get("cuda")
    cuda = _rng_cuda_device(device) if saved is not None else None
    if cuda is None:
        return
    if isinstance(saved, (list, tuple)):  # the old format: every visible GPU
        if cuda.index >= len(saved):
            logger.warning(
                "the checkpoint has no CUDA random state for GPU %d (it saved %d); that GPU's "
                "random stream restarts from the seed",
                cuda.index,
                len(saved),
            )
            return
        saved = saved[cuda.index]
    torch.cuda.set_rng_state(saved, cuda)


# glibc mallopt parameters and their defaults (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
_NEVER_TRIM = 2**31 - 1  # mallopt takes a C int: a larger value would be truncated (2**62 -> 0)


def _glibc() -> Any:  # None off glibc (another libc lacks gnu_get_libc_version)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None
    except OSError:
        return None


@contextlib.contextmanager
def tuned_allocator(device: torch.device) -> Iterator[None]:
    """Keep freed host memory for reuse while training on the CPU (glibc only).

    glibc serves each large block with a fresh ``mmap`` and unmaps it when freed, so every CPU
    step page-faults and zero-fills its activations again; heap blocks that are never trimmed
    are reused. The numbers computed are unchanged; the defaults are restored afterwards.
    """
    libc = _glibc() if device.type == "cpu" else None
    if libc is not None:
        tune_allocator(device)
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
            libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
            libc.malloc_trim(0)


def tune_allocator(device: torch.device) -> bool:
    """Apply :func:`tuned_allocator`'s settings for the rest of the process; whether applied."""
    libc = _glibc() if device.type == "cpu" else None
    if libc is None:
        return False
    applied = libc.mallopt(_M_MMAP_MAX, 0) == 1
    applied &= libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM) == 1
    logger.debug("glibc allocator tuned for CPU training: %s", applied)
    return bool(applied)
