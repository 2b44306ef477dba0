"""Batch-1 inference latency: PyTorch eager, our ONNX export and upstream's, on the same weights.

For each size (Nano at 384, Seg-Nano at 312 by default), upstream rfdetr==1.11.2 runs in its
own virtual environment, in a subprocess: it builds the model with random weights (every tensor
perturbed, as benchmarks/parity_upstream.py does), saves them and exports its ONNX file (its
default: fixed batch 1, opset 17; and with ``dynamic_batch=True``). This process loads the same
weights into our model, exports ours (default: dynamic batch; and a fixed-batch copy), and then
times every runner interleaved in one loop, so machine load affects all of them alike:

- ``torch eager``: our model under ``torch.inference_mode``;
- ``ours ORT`` / ``upstream ORT``: ONNX Runtime, CPUExecutionProvider, ``--threads`` intra-op
  threads (2), full graph optimisation.

Idle worker threads are told not to spin (ORT ``session.intra_op.allow_spinning=0``, OpenMP
``OMP_WAIT_POLICY=PASSIVE``): a spinning pool would steal the cores from the next runner of the
interleaved loop. It prints median and p90 latency, the ratio of ours to upstream's, the max
output difference between the two ONNX files on the same input, and both file sizes.

``UPSTREAM_PYTHONPATH``, when set, is the upstream subprocess's ``PYTHONPATH`` (a folder holding
``onnx`` when that venv lacks ``rfdetr[onnx]``, as /work/upstream-venv did on 2026-12-04).

Usage:
    python benchmarks/inference_latency.py --upstream-venv /work/upstream-venv \\
        [--sizes nano seg-nano] [--runs 30] [--threads 2]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see above)

import argparse
import collections
import json
import logging
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from rfdetr.api import RFDETRModel

UPSTREAM_CLASSES = {"nano": "RFDETRNano", "small": "RFDETRSmall", "seg-nano": "RFDETRSegNano"}
UPSTREAM_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    import rfdetr
    cls_name, out_dir = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    wrapper = getattr(rfdetr, cls_name)(pretrain_weights=None, device="cpu")
    net = wrapper.model.model.eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    torch.save(net.state_dict(), f"{out_dir}/state.pt")
    paths = []
    for dynamic, name in ((False, "static"), (True, "dynamic")):
        # Upstream's defaults (verbose=True prints the graph; it goes to the captured stdout).
        paths.append(str(wrapper.export(output_dir=f"{out_dir}/{name}", dynamic_batch=dynamic)))
    with open(f"{out_dir}/paths.txt", "w") as handle:
        print(*paths, file=handle)
    """
)
OUTPUTS = ("dets", "labels", "masks")


def upstream_export(python: Path, size: str, folder: Path) -> tuple[dict, Path, Path]:
    """Perturbed upstream weights and its static- and dynamic-batch ONNX files."""
    script = folder / "upstream_export.py"
    script.write_text(UPSTREAM_SCRIPT)
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "OMP_WAIT_POLICY": "PASSIVE"}
    if os.environ.get("UPSTREAM_PYTHONPATH"):  # e.g. `onnx` for a venv made without the extra
        env["PYTHONPATH"] = os.environ["UPSTREAM_PYTHONPATH"]
    subprocess.run(
        [str(python), str(script), UPSTREAM_CLASSES[size], str(folder)],
        check=True,
        env=env,
        capture_output=True,
    )
    static, dynamic = (Path(line) for line in (folder / "paths.txt").read_text().split())
    state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    return state, static, dynamic


def our_model(size: str, state: dict | None) -> RFDETRModel:
    model = RFDETRModel(pretrain_weights=None, size=size, device="cpu")
    if state is not None:
        state = {k: v for k, v in state.items() if k != "_kp_active_mask"}
        model.model.load_state_dict(state, strict=True)
    else:
        torch.manual_seed(0)
        with torch.no_grad():
            for p in model.model.parameters():
                p.add_(torch.randn_like(p) * 0.02)
    return model


def ort_runner(path: Path, threads: int) -> tuple[Callable[[np.ndarray], list], object]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return (lambda x: session.run(None, {name: x})), session


def time_interleaved(runners: dict[str, Callable[[], object]], runs: int) -> dict[str, np.ndarray]:
    for run in runners.values():  # warm-up: first-call allocations and lazy init
        run()
        run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(runs):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: np.array(values) * 1e3 for name, values in times.items()}


def op_profile(path: Path, threads: int, image: np.ndarray, runs: int = 8) -> tuple[float, dict]:
    """Milliseconds per op type in the fastest of ``runs`` profiled runs (least disturbed)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(runs + 1):
        session.run(None, {session.get_inputs()[0].name: image})
    events = json.loads(Path(session.end_profiling()).read_text())
    best = min((e for e in events if e.get("name") == "model_run"), key=lambda e: e["dur"])
    ops: dict[str, float] = collections.Counter()
    for event in events:
        inside = best["ts"] <= event.get("ts", -1) <= best["ts"] + best["dur"]
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and inside:
            ops[event["args"]["op_name"]] += event["dur"] / 1e3
    return best["dur"] / 1e3, dict(ops)


def print_profiles(files: dict[str, Path], threads: int, image: np.ndarray) -> None:
    profiles = {name: op_profile(path, threads, image) for name, path in files.items()}
    print("  fastest profiled run, ms per op type:")
    print("    " + " " * 22 + "".join(f"{name:>12s}" for name in profiles))
    print("    " + f"{'(whole run)':22s}" + "".join(f"{p[0]:12.1f}" for p in profiles.values()))
    totals: dict[str, float] = collections.Counter()
    for _, ops in profiles.values():
        totals.update(ops)
    for op, _ in sorted(totals.items(), key=lambda item: -item[1])[:8]:
        print(f"    {op:22s}" + "".join(f"{p[1].get(op, 0.0):12.1f}" for p in profiles.values()))


def max_differences(ours: list, theirs: list, names: list[str]) -> dict[str, str]:
    out = {}
    for name, a, b in zip(names, ours, theirs, strict=True):
        diff = float(np.abs(a.astype(np.float64) - b).max())
        scale = float(np.abs(b).max())
        out[name] = f"{diff:.1e}" + (f" (rel {diff / scale:.1e})" if scale > 1 else "")
    return out


def bench_size(
    size: str, python: Path | None, runs: int, threads: int, folder: Path, profile: bool
) -> None:
    state = static = dynamic = None
    if python is not None:
        state, static, dynamic = upstream_export(python, size, folder)
    model = our_model(size, state)
    ours = model.export_files(folder / "ours").path
    ours_static = model.export_files(folder / "ours-static", dynamic_batch=False).path
    res = model.resolution
    image = np.random.default_rng(0).standard_normal((1, 3, res, res)).astype(np.float32)
    tensor = torch.from_numpy(image)
    ours_run, ours_session = ort_runner(ours, threads)
    runners: dict[str, Callable[[], object]] = {}

    def eager() -> object:
        with torch.inference_mode():
            return model.model(tensor)

    runners["torch eager"] = eager
    runners["ours ORT (dynamic batch)"] = lambda: ours_run(image)
    static_run, _ = ort_runner(ours_static, threads)
    runners["ours ORT (fixed batch 1)"] = lambda: static_run(image)
    if static is not None and dynamic is not None:
        up_run, _ = ort_runner(static, threads)
        up_dyn_run, _ = ort_runner(dynamic, threads)
        runners["upstream ORT (fixed batch 1)"] = lambda: up_run(image)
        runners["upstream ORT (dynamic batch)"] = lambda: up_dyn_run(image)
    times = time_interleaved(runners, runs)
    print(f"\n{size} at {res}x{res}, batch 1, {threads} threads, {runs} interleaved runs")
    medians = {name: float(np.median(t)) for name, t in times.items()}
    for name, t in times.items():
        print(
            f"  {name:30s} median {medians[name]:7.1f} ms   p90 {np.percentile(t, 90):7.1f} ms"
            f"   min {t.min():7.1f} ms"
        )
    print(f"  ours file:     {ours.stat().st_size / 1e6:7.1f} MB  ({ours.name})")
    if static is None:
        return
    print(f"  upstream file: {static.stat().st_size / 1e6:7.1f} MB  ({static.name})")
    for label, a, b in (
        ("fixed batch", "ours ORT (fixed batch 1)", "upstream ORT (fixed batch 1)"),
        ("dynamic batch", "ours ORT (dynamic batch)", "upstream ORT (dynamic batch)"),
        ("each default", "ours ORT (dynamic batch)", "upstream ORT (fixed batch 1)"),
    ):
        print(f"  ratio ours/upstream ({label}): {medians[a] / medians[b]:.2f} (goal <= 0.70)")
    names = [o.name for o in ours_session.get_outputs()]
    diffs = max_differences(ours_run(image), up_run(image), names)
    shown = ", ".join(f"{k} {v}" for k, v in diffs.items())
    print(f"  max |ours - upstream| ONNX outputs: {shown}")
    if profile:
        print_profiles({"ours": ours_static, "upstream": static}, threads, image)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream-venv", type=Path, default=None)
    parser.add_argument("--sizes", nargs="+", default=["nano", "seg-nano"])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--profile", action="store_true", help="also print per-op times (fixed-batch files)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    python = args.upstream_venv / "bin" / "python" if args.upstream_venv else None
    print(f"onnxruntime {ort.__version__}, torch {torch.__version__}, {os.cpu_count()} CPUs")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            bench_size(size, python, args.runs, args.threads, Path(tmp), args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
