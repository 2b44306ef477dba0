"""The CUDA decisions of training, checked on the CPU.

No GPU runs here: each test replaces the ``torch.cuda`` / ``torch.distributed`` query the
decision reads (compute capability, RNG state, device count, process group) with a stand-in and
checks what the training code decides from it. What the GPU then does with the decision is
exercised by ``benchmarks/gpu_suite.sh`` on a CUDA machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch.distributed import distributed_c10d

from rfdetr.config import ConfigError, RunConfig, TrainConfig
from rfdetr.data.transforms import resize_batch
from rfdetr.training import distributed, runtime
from rfdetr.training.distributed import DistInfo, cleanup, setup_distributed
from rfdetr.training.runtime import (
    capture_rng_state,
    check_compile,
    configure_tf32,
    resolve_device,
    resolve_precision,
    restore_rng_state,
)
from rfdetr.training.setup import TrainBatches, build_datasets

CUDA0, CUDA1, CUDA2 = (torch.device("cuda", i) for i in range(3))


def _gpu(monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int]) -> None:
    """A GPU of ``capability`` whose torch build also claims (emulated) bf16 support."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"sm_{capability}")


@pytest.mark.parametrize(
    ("capability", "dtype"),
    [
        ((7, 0), torch.float16),  # V100
        ((7, 5), torch.float16),  # T4
        ((8, 0), torch.bfloat16),  # A100
        ((9, 0), torch.bfloat16),  # H100
    ],
)
def test_training_amp_auto_uses_bf16_only_from_compute_capability_8(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], dtype: torch.dtype
) -> None:
    _gpu(monkeypatch, capability)
    precision = resolve_precision(TrainConfig(amp=True), CUDA0)
    assert precision.dtype == dtype
    assert precision.needs_scaler is (dtype == torch.float16)  # fp16 always with a GradScaler


def test_training_forced_bf16_on_an_old_gpu_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _gpu(monkeypatch, (7, 5))
    with caplog.at_level("WARNING", logger="rfdetr.training.runtime"):
        precision = resolve_precision(TrainConfig(amp_dtype="bf16"), CUDA0)
    assert precision.dtype == torch.bfloat16 and "no native bf16" in caplog.text


class FakeCudaRng:
    """Per-GPU generator states of a machine with ``count`` GPUs (state of GPU i: ``[i, i]``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, count: int, current: int = 0) -> None:
        self.count = count
        self.set: dict[int, torch.Tensor] = {}
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
        monkeypatch.setattr(torch.cuda, "get_rng_state", self.get)
        monkeypatch.setattr(torch.cuda, "set_rng_state", self.put)

        def everything(*args: Any) -> Any:
            raise AssertionError("only this process's GPU may be saved or restored")

        monkeypatch.setattr(torch.cuda, "get_rng_state_all", everything)
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", everything)

    def _index(self, device: torch.device) -> int:
        index = torch.device(device).index
        if index is None or index >= self.count:
            raise IndexError(f"no GPU {device} on a {self.count}-GPU machine")
        return index

    def get(self, device: torch.device) -> torch.Tensor:
        index = self._index(device)
        return torch.tensor([index, index], dtype=torch.uint8)

    def put(self, state: torch.Tensor, device: torch.device) -> None:
        self.set[self._index(device)] = state


def test_training_rng_state_keeps_only_this_process_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeCudaRng(monkeypatch, count=4)
    state = capture_rng_state(CUDA1)
    assert torch.equal(state["cuda"], torch.tensor([1, 1], dtype=torch.uint8))
    assert "cuda" not in capture_rng_state(torch.device("cpu"))  # a CPU run on a GPU machine


def test_training_rng_state_resumes_on_fewer_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeCudaRng(monkeypatch, count=4)
    saved = capture_rng_state(torch.device("cuda", 3))
    target = FakeCudaRng(monkeypatch, count=1)  # the resumed run has one GPU
    restore_rng_state(saved, CUDA0)
    assert torch.equal(target.set[0], torch.tensor([3, 3], dtype=torch.uint8))


def test_training_rng_state_reads_the_old_every_gpu_format(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    old = capture_rng_state(torch.device("cpu"))
    old["cuda"] = [torch.tensor([i, 9], dtype=torch.uint8) for i in range(4)]  # 4 GPUs saved
    target = FakeCudaRng(monkeypatch, count=4)
    restore_rng_state(old, CUDA2)
    assert list(target.set) == [2] and target.set[2][0] == 2  # its own entry, no other GPU
    one = dict(old, cuda=old["cuda"][:1])  # saved on one GPU, resumed as rank on GPU 2
    target.set.clear()
    with caplog.at_level("WARNING", logger="rfdetr.training.runtime"):
        restore_rng_state(one, CUDA2)
    assert target.set == {} and "no CUDA random state for GPU 2" in caplog.text


def test_training_compile_on_cuda_needs_a_c_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CC", raising=False)
    found: dict[str, str] = {}
    monkeypatch.setattr(runtime.shutil, "which", lambda name: found.get(name))
    compiled = TrainConfig(compile=True)
    with pytest.raises(ConfigError, match="needs a C compiler") as err:
        check_compile(compiled, CUDA0)
    assert "\n" not in str(err.value)
    check_compile(compiled, torch.device("cpu"))  # inductor on the CPU: not Triton's launcher
    check_compile(TrainConfig(compile=False), CUDA0)
    found["gcc"] = "/usr/bin/gcc"
    check_compile(compiled, CUDA0)
    monkeypatch.setenv("CC", "clang-99")
    with pytest.raises(ConfigError, match="CC=clang-99 is not found"):
        check_compile(compiled, CUDA0)


def test_training_compile_refused_before_data_or_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``fit`` refuses up front: the dataset folder does not even exist."""
    from rfdetr.training import fit

    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(runtime.shutil, "which", lambda name: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    config = RunConfig.from_kwargs(
        "tiny", dataset_dir=str(tmp_path / "missing"), device="cuda", compile=True
    )
    with pytest.raises(ConfigError, match="needs a C compiler"):
        fit(config)


@pytest.fixture
def tf32_flags() -> Iterator[None]:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.usefixtures("tf32_flags")
def test_training_tf32_on_ampere_and_later_with_an_off_switch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RFDETR_TF32", raising=False)
    _gpu(monkeypatch, (8, 6))
    assert configure_tf32(CUDA0) is True
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert configure_tf32(CUDA0, enabled=False) is False  # train.tf32: false
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    monkeypatch.setenv("RFDETR_TF32", "0")
    assert configure_tf32(CUDA0) is False
    monkeypatch.delenv("RFDETR_TF32")
    _gpu(monkeypatch, (7, 0))  # V100: no TF32 units
    assert configure_tf32(CUDA0) is False
    torch.backends.cuda.matmul.allow_tf32 = True
    assert configure_tf32(torch.device("cpu")) is False
    assert torch.backends.cuda.matmul.allow_tf32  # the CPU path leaves the switches alone


@pytest.mark.parametrize(
    "visible",
    [
        "GPU-6f1c2b3a-0000-4a5b-8c9d-0123456789ab",
        "0",
        "1,2",
        "/var/run/nvidia-container-devices",
    ],
)
def test_training_assigned_gpu_without_cuda_is_an_error(
    monkeypatch: pytest.MonkeyPatch, visible: str
) -> None:
    """The values NVIDIA's Kubernetes device plugin gives a container it allocated GPUs to
    (NVIDIA/k8s-device-plugin ``internal/plugin/server.go`` at f32cd532,
    ``updateResponseForDeviceListEnvVar``: the device IDs joined by commas, UUIDs or indices
    per ``deviceIDStrategy``; ``updateResponseForDeviceMounts``: the volume-mounts strategy's
    folder). CDI-only strategies set no variable: not detectable this way."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", visible)
    with pytest.raises(ConfigError, match="CUDA is not usable") as err:
        resolve_device(None, DistInfo())
    assert f"NVIDIA_VISIBLE_DEVICES={visible}" in str(err.value) and "\n" not in str(err.value)
    assert resolve_device("cpu", DistInfo()) == torch.device("cpu")  # an explicit CPU run
    with pytest.raises(ConfigError, match="device 'cuda' asks for a GPU"):
        resolve_device("cuda", DistInfo())


@pytest.mark.parametrize("visible", [None, "", "all", "none", "void"])
def test_training_no_gpu_assigned_trains_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch, visible: str | None
) -> None:
    """``all`` is what CUDA base images set in their environment, GPU or not."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if visible is None:
        monkeypatch.delenv("NVIDIA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", visible)
    assert resolve_device(None, DistInfo()) == torch.device("cpu")


def test_training_cli_assigned_gpu_without_cuda_exits_2(
    monkeypatch: pytest.MonkeyPatch, shapes_coco: Path, tmp_path: Path, capsys: Any
) -> None:
    from rfdetr.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "GPU-0")
    argv = ["train", str(shapes_coco), "--model", "tiny", "--epochs", "1"]
    assert main([*argv, "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rfdetr train: error: NVIDIA_VISIBLE_DEVICES=GPU-0") and "\n" not in err
    assert not (tmp_path / "out" / "checkpoint.pth").exists()


@pytest.mark.parametrize(("device", "pinned"), [("cpu", False), ("cuda", True)])
def test_training_pin_memory_follows_the_training_device(
    monkeypatch: pytest.MonkeyPatch, shapes_coco: Path, device: str, pinned: bool
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine either way
    config = RunConfig.from_kwargs("tiny", dataset_dir=str(shapes_coco), batch_size=2)
    batches = TrainBatches(build_datasets(config).train, config, DistInfo(), torch.device(device))
    assert batches.epoch(0).pin_memory is pinned


def _torchrun_env(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    chosen: list[int] = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    return chosen


def test_training_set_device_also_under_an_existing_process_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chosen = _torchrun_env(monkeypatch)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)  # the caller made the group
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    info = setup_distributed(use_cuda=True)
    assert chosen == [1] and info.local_rank == 1 and not info.owns_group


@pytest.mark.parametrize("backend", ["nccl", "gloo"])
def test_training_failed_rank_aborts_instead_of_waiting_in_destroy(
    monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda group=None: backend)
    monkeypatch.setattr(dist, "destroy_process_group", lambda group=None: calls.append("destroy"))
    abort = "_abort_process_group"
    monkeypatch.setattr(distributed_c10d, abort, lambda group=None: calls.append("abort"))
    info = DistInfo(rank=0, world_size=2, owns_group=True)
    cleanup(info, failed=True)
    assert calls == (["abort"] if backend == "nccl" else [])  # never the blocking destroy
    cleanup(info)
    assert calls[-1] == "destroy"  # a healthy end still leaves the group cleanly
    assert distributed.cleanup is cleanup


def test_training_resize_batch_keeps_sizes_on_the_images_device() -> None:
    images = torch.empty(2, 3, 64, 64, device="meta")  # stands for a CUDA batch
    targets = [{"size": torch.tensor([64, 64])}, {"size": torch.tensor([64, 64])}]
    _, resized = resize_batch(images, targets, 96)
    assert all(t["size"].device == images.device for t in resized)


def test_training_model_default_device_refuses_an_assigned_gpu_without_cuda(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The evaluate step and ``predict`` pick their device here when none is given."""
    from rfdetr.api import default_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "GPU-0")
    with pytest.raises(ConfigError, match="NVIDIA_VISIBLE_DEVICES=GPU-0 assigns a GPU"):
        default_device()
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "all")
    assert default_device() == torch.device("cpu")
