"""``benchmarks/gpu_suite.sh`` and its driver, as far as a machine without CUDA can run them.

The suite measures on a GPU only; here: it refuses clearly without CUDA, the driver's code runs
end to end at toy size on the CPU (``--device cpu --dry-run``), and the matmul accounting of
``train_throughput.py`` adds up on a step whose FLOPs are known from its shapes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPT = BENCHMARKS / "gpu_suite.sh"


def _no_cuda_env() -> dict[str, str]:
    """This environment with every GPU hidden from CUDA (so the test means the same anywhere)."""
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}


def test_gpu_suite_script_parses_and_passes_shellcheck() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    assert os.access(SCRIPT, os.X_OK)
    if shutil.which("shellcheck"):  # Debian's shellcheck where installed (it is in CI images)
        subprocess.run(["shellcheck", str(SCRIPT)], check=True)


def test_gpu_suite_fails_fast_without_cuda(tmp_path: Path) -> None:
    env = {**_no_cuda_env(), "UPSTREAM_VENV": str(tmp_path / "venv")}
    done = subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "gpu_suite: no usable CUDA device here (torch.cuda.is_available() is False); "
        "run it on a CUDA machine"
    ]
    assert not (tmp_path / "venv").exists()  # nothing installed before the check


def test_gpu_suite_driver_refuses_cuda_without_it() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_suite.py"), "--device", "cuda"],
        env=_no_cuda_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "CUDA is not usable here" in done.stdout


@pytest.mark.slow
def test_gpu_suite_driver_dry_run_on_the_cpu() -> None:
    """Ours measured end to end; an upstream interpreter that dies (``false``) is reported for
    its item and fails the suite without stopping it."""
    command = [sys.executable, str(BENCHMARKS / "gpu_suite.py"), "--device", "cpu", "--dry-run"]
    command += ["--steps", "1", "--warmup", "1", "--ort-runs", "2", "--threads", "1"]
    command += ["--upstream-python", shutil.which("false") or "/bin/false"]
    done = subprocess.run(command, env=_no_cuda_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "upstream: ready: worker exited" in done.stdout
    assert "upstream: has no tiny model; ours only" in done.stdout
    assert "PASS  auto: multi-scale run, resumed" in done.stdout
    row = re.search(r"^\s+nano\s+128\s+2\s+eager\s+([0-9.]+)\s", done.stdout, re.MULTILINE)
    assert row is not None and float(row.group(1)) > 0, done.stdout
    for batch in (1, 8):
        latency = re.search(rf"batch {batch}: ours\s+([0-9.]+)", done.stdout)
        assert latency is not None and float(latency.group(1)) > 0, done.stdout
    assert "providers ['CPUExecutionProvider']" in done.stdout
    assert done.stdout.rstrip().endswith("gpu_suite: FAILED items above")


def test_train_throughput_matmul_accounting_matches_the_shapes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from train_throughput import _profile

    batch, n_in, n_out = 64, 256, 128
    layer = torch.nn.Linear(n_in, n_out)
    images = torch.randn(batch, n_in)

    def step(x: torch.Tensor, _: object) -> None:
        torch.relu(layer(x)).sum().backward()

    split = _profile(step, images, None, "cpu")
    # forward addmm, and backward: the weight gradient's mm (the input needs none)
    assert split["matmul_flops"] == 2 * (2 * batch * n_in * n_out)
    assert split["flops"] == split["matmul_flops"]
    assert 0 < split["matmul_s"] <= split["total_s"]
    assert split["attention_s"] == 0


def test_gpu_suite_onnx_section_fails_when_the_cuda_provider_falls_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """onnxruntime-gpu lists its CUDA provider even when it cannot start; listing it on the CPU
    package makes ONNX Runtime take that same fallback (see tests/export/test_export_providers)."""
    import argparse

    import onnxruntime as ort

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from gpu_suite import Budget, onnx_latency

    args = argparse.Namespace(device="cuda", dry_run=True, ort_runs=1)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert onnx_latency(args, None, Budget(600), tmp_path / "a") is False
    assert "FAILED: onnxruntime" in capsys.readouterr().out
    cuda_listed = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: cuda_listed)
    monkeypatch.setattr(ort, "preload_dlls", lambda *a, **k: None, raising=False)
    (tmp_path / "b").mkdir()
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"):  # onnxruntime's own
        assert onnx_latency(args, None, Budget(600), tmp_path / "b") is False
    out = capsys.readouterr().out
    assert "ours: FAILED, the CUDA provider did not start" in out and "batch 8: ours" in out
