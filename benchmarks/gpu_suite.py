"""GPU suite: ours vs upstream rfdetr 1.11.2 on one CUDA machine, within a time budget.

Started by ``benchmarks/gpu_suite.sh`` (which checks CUDA and prepares the upstream venv).
Prints:

0. Checks: ``amp`` auto's choice, ``tiny`` runs with multi-scale and a resume (auto and fp16
   precision), one CUDA RNG state per checkpoint, TF32 on from compute capability 8.0.
1. Training, bf16 autocast (as ``amp`` picks on Ampere and later): images/s (median of the
   timed steps) and peak GPU memory (``torch.cuda.max_memory_allocated``) for Nano 384 and
   Medium 576 at batch 8 and 16, eager, ``torch.compile`` and ``torch.compile`` with CUDA graphs
   (mode ``reduce-overhead``). One step = forward, losses, backward, clipping, AdamW (see
   ``train_throughput.py``, whose workers run here: one process per side, started together,
   warmed up together (compilation), then timed step by step in turn).
2. ONNX Runtime CUDA execution provider latency, batch 1 and 8, of both Nano 384 exports
   (dynamic batch, same weights), timed interleaved with host inputs and outputs, as
   ``session.run`` gives them. A session that fell back to the CPU fails the suite.

Items run cheapest-first (eager, ONNX Runtime, compile, CUDA graphs); an item whose estimated
cost (the last measured one of its kind, else a guess) no longer fits ``--budget-s`` is printed
as skipped. Exit code 1 when an item failed (a worker crashed, ran out of memory, or the CUDA
provider did not start).

``--device cpu --dry-run`` runs the same code at toy size on the CPU, ours only (the tests).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_throughput import Worker

TRAIN_SIZES = (("nano", 384), ("medium", 576))
BATCHES = (8, 16)
MODES = ("none", "default", "cudagraphs")
MODE_NAMES = {"none": "eager", "default": "compile", "cudagraphs": "compile+cudagraphs"}
GUESS_S = {"none": 40.0, "default": 150.0, "cudagraphs": 180.0, "ort": 120.0}


class Budget:
    """Seconds left, and per kind of item the last measured cost."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.cost: dict[str, float] = {}

    def fits(self, kind: str) -> bool:
        return time.monotonic() + self.cost.get(kind, GUESS_S[kind]) <= self.end

    def spent(self, kind: str, started: float) -> None:
        self.cost[kind] = time.monotonic() - started


def _pair_args(args: argparse.Namespace, size: str, batch: int, mode: str) -> argparse.Namespace:
    precision = "fp32" if args.device == "cpu" else "bf16"
    return argparse.Namespace(
        size=size, batch=batch, threads=args.threads, allocator="default",
        upstream_allocator="default", precision=precision, upstream_precision=precision,
        device=args.device, compile=mode,
    )  # fmt: skip


def _broadcast(workers: dict[str, Worker], command: str) -> dict[str, dict[str, Any]]:
    """Send ``command`` to every worker first, then collect the replies (they run together);
    a worker that died replies ``{"error": ...}``."""
    replies: dict[str, dict[str, Any]] = {}
    for name, worker in workers.items():
        try:
            assert worker.process.stdin is not None
            worker.process.stdin.write(command + "\n")
            worker.process.stdin.flush()
        except (BrokenPipeError, OSError) as err:
            replies[name] = {"error": f"{command}: {err}"}
    for name, worker in workers.items():
        if name not in replies:
            try:
                replies[name] = worker.read()
            except RuntimeError as err:
                replies[name] = {"error": f"{command}: {err}"}
    return replies


def _drop(workers: dict[str, Worker], name: str) -> None:
    """Stop a worker that failed (it may already have exited)."""
    worker = workers.pop(name)
    if worker.process.poll() is None:
        worker.process.kill()
    worker.process.wait()


def train_pair(
    args: argparse.Namespace, pythons: dict[str, str], size: str, res: int, batch: int, mode: str
) -> dict[str, dict[str, Any]]:
    """One configuration for every side: ``{side: {"img_s", "gb"} or {"error"}}``."""
    pair = _pair_args(args, size, batch, mode)
    workers: dict[str, Worker] = {}
    results: dict[str, dict[str, Any]] = {}
    try:
        for name, python in pythons.items():
            workers[name] = Worker(python, name, pair, res, wait=False)
        for name in list(workers):
            _ready_or_error(workers, results, name, "ready")
        for _ in range(args.warmup):
            for name, reply in _broadcast(workers, "step").items():
                if "error" in reply:
                    results[name] = reply
                    _drop(workers, name)
        times: dict[str, list[float]] = {name: [] for name in workers}
        for _ in range(args.steps):
            for name in list(workers):
                reply = _ask(workers, name, "step")
                if "error" in reply:
                    results[name] = reply
                    _drop(workers, name)
                else:
                    times[name].append(reply["seconds"])
        for name in list(workers):
            peak = _ask(workers, name, "rss").get("gpu_peak_gb")
            results[name] = {"img_s": batch / statistics.median(times[name]), "gb": peak}
    finally:
        for name in list(workers):
            _drop(workers, name)
    return results


def _ready_or_error(
    workers: dict[str, Worker], results: dict[str, dict[str, Any]], name: str, what: str
) -> None:
    try:
        workers[name].read()
    except RuntimeError as err:  # the worker died while loading
        results[name] = {"error": f"{what}: {err}"}
        _drop(workers, name)


def _ask(workers: dict[str, Worker], name: str, command: str) -> dict[str, Any]:
    try:
        return workers[name].ask(command)
    except (RuntimeError, BrokenPipeError) as err:
        return {"error": str(err)}


def _cell(result: dict[str, Any] | None) -> str:
    if result is None:
        return f"{'-':>16s}"
    if "error" in result:
        return f"{'FAILED':>16s}"
    gb = f"{result['gb']:.1f} GB" if result.get("gb") is not None else "-"
    return f"{result['img_s']:7.1f} {gb:>8s}"


def training(
    args: argparse.Namespace, pythons: dict[str, str], budget: Budget, modes: tuple[str, ...]
) -> bool:
    """Section 1 for ``modes``; returns whether every measured item succeeded."""
    sizes = (("nano", 128),) if args.dry_run else TRAIN_SIZES
    batches = (2,) if args.dry_run else BATCHES
    print("\ntraining, bf16 autocast (fp32 on the CPU): img/s (median step) and peak GPU memory")
    sides = "".join(f"{name + ' img/s  mem':>20s}" for name in pythons)
    print(f"  {'size':8s}{'res':>5s}{'batch':>6s}  {'mode':20s}{sides}{'ours/upstream':>15s}")
    ok = True
    for mode in modes:
        for size, res in sizes:
            for batch in batches:
                label = f"  {size:8s}{res:5d}{batch:6d}  {MODE_NAMES[mode]:20s}"
                if not budget.fits(mode):
                    print(f"{label}skipped: over the time budget")
                    continue
                started = time.monotonic()
                results = train_pair(args, pythons, size, res, batch, mode)
                budget.spent(mode, started)
                cells = "".join(f"    {_cell(results.get(name))}" for name in pythons)
                ratio = ""
                if all("img_s" in results.get(n, {}) for n in ("ours", "upstream")):
                    ratio = f"{results['ours']['img_s'] / results['upstream']['img_s']:13.2f}x"
                print(f"{label}{cells}{ratio}", flush=True)
                for name, result in results.items():
                    if "error" in result:
                        ok = False
                        print(f"    {name}: {result['error']}")
    return ok


def _exports(size: str, upstream: str | None, folder: Path) -> tuple[dict[str, Path], bool]:
    """Both dynamic-batch ONNX files of ``size`` on the same (upstream's perturbed) weights."""
    from inference_latency import UPSTREAM_CLASSES, our_model, upstream_export

    files: dict[str, Path] = {}
    state, ok = None, True
    if upstream and size not in UPSTREAM_CLASSES:
        print(f"  upstream: has no {size} model; ours only")
    elif upstream:
        (folder / "up").mkdir()
        try:
            state, _, files["upstream"] = upstream_export(Path(upstream), size, folder / "up")
        except (subprocess.CalledProcessError, OSError) as err:
            print(f"  upstream: FAILED to export ({err})")
            ok = False
    files["ours"] = our_model(size, state).export_files(folder / "ours").path
    return files, ok


def onnx_latency(
    args: argparse.Namespace, upstream: str | None, budget: Budget, folder: Path
) -> bool:
    """Section 2; returns False when an export failed or a CUDA session fell back to the CPU."""
    import numpy as np
    import onnxruntime as ort
    from inference_latency import time_interleaved

    from rfdetr.export.runtime import active_providers
    from rfdetr.export.verify import make_session

    size = "tiny" if args.dry_run else "nano"
    print(f"\nONNX Runtime latency on {args.device}, {size}, dynamic-batch exports, ms (median)")
    if not budget.fits("ort"):
        print("  skipped: over the time budget")
        return True
    if args.device != "cpu" and "CUDAExecutionProvider" not in ort.get_available_providers():
        print(f"  FAILED: onnxruntime {ort.__version__} has no CUDA provider (the gpu extra)")
        return False
    started = time.monotonic()
    files, ok = _exports(size, upstream, folder)
    sessions = {}
    for name, path in sorted(files.items()):
        sessions[name] = make_session(path, None, args.device)
        providers = active_providers(sessions[name], args.device, str(path))
        print(f"  {name}: providers {providers}")
        if args.device != "cpu" and providers[0] != "CUDAExecutionProvider":
            print(f"  {name}: FAILED, the CUDA provider did not start (see the warning above)")
            ok = False
    res = int(sessions["ours"].get_inputs()[0].shape[-1])
    for batch in (1, 8):
        image = np.random.default_rng(0).standard_normal((batch, 3, res, res), dtype=np.float32)
        runners = {
            name: (lambda s=session, x=image: s.run(None, {s.get_inputs()[0].name: x}))
            for name, session in sessions.items()
        }
        times = time_interleaved(runners, args.ort_runs)
        medians = {name: float(np.median(t)) for name, t in times.items()}
        shown = "   ".join(f"{name} {ms:7.2f}" for name, ms in medians.items())
        ratio = ""
        if "upstream" in medians:
            ratio = f"   ours/upstream {medians['ours'] / medians['upstream']:.2f}"
        print(f"  batch {batch}: {shown}{ratio}")
    budget.spent("ort", started)
    return ok


def checks(args: argparse.Namespace, folder: Path) -> bool:
    """Section 0: the GPU decisions of training, end to end on this device (``tiny`` runs).

    A check that only means something on CUDA prints ``n/a`` on the CPU.
    """
    import torch

    from rfdetr.config import RunConfig
    from rfdetr.data.synthetic import make_shapes_dataset
    from rfdetr.training import fit
    from rfdetr.training.runtime import cuda_has_native_bf16, resolve_precision

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    data = make_shapes_dataset(folder / "shapes", splits={"train": 8, "valid": 4}, image_size=96)
    results: dict[str, bool | None] = {}
    native = cuda and cuda_has_native_bf16(device)
    chosen = resolve_precision(RunConfig.from_kwargs("tiny", dataset_dir="-").train, device)
    print(f"\nchecks on {device}: amp auto -> {chosen.name}")
    wanted = "bf16" if native else "fp16"
    results["amp auto: bf16 from compute capability 8.0, else fp16"] = (
        chosen.name == wanted if cuda else None
    )
    for amp_dtype in ("auto", "fp16") if cuda else ("auto",):
        out = folder / f"run-{amp_dtype}"
        options = {"dataset_dir": str(data), "output_dir": str(out), "epochs": 1, "batch_size": 4}
        options |= {"grad_accum_steps": 1, "num_workers": 2, "multi_scale": True}
        options |= {"device": args.device, "amp_dtype": amp_dtype, "progress_bar": False}
        options |= {"tensorboard": False, "run_test": False}
        fit(RunConfig.from_kwargs("tiny", **options))
        state = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)
        rng = state["rng"][0].get("cuda")
        results[f"{amp_dtype}: one CUDA RNG state saved"] = (
            isinstance(rng, torch.Tensor) if cuda else None
        )
        options |= {"epochs": 2, "resume": str(out / "checkpoint.pth")}
        resumed = fit(RunConfig.from_kwargs("tiny", **options))
        results[f"{amp_dtype}: multi-scale run, resumed"] = resumed.epochs_completed == 2
    tf32 = torch.backends.cuda.matmul.allow_tf32
    results["TF32 on from compute capability 8.0"] = tf32 is native if cuda else None
    for name, passed in results.items():
        print(f"  {'n/a ' if passed is None else 'PASS' if passed else 'FAIL'}  {name}")
    return all(passed is not False for passed in results.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream-python", default="", help="'' measures ours only")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--budget-s", type=float, default=420.0)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per side and item")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--ort-runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=8, help="CPU threads per worker")
    parser.add_argument("--dry-run", action="store_true", help="toy sizes (tests, on the CPU)")
    args = parser.parse_args()
    import torch

    if args.device != "cpu" and not torch.cuda.is_available():
        print("gpu_suite: CUDA is not usable here (torch.cuda.is_available() is False)")
        return 2
    where = torch.cuda.get_device_name() if args.device != "cpu" else "CPU"
    print(f"gpu_suite on {where}: torch {torch.__version__}, budget {args.budget_s:.0f} s")
    budget = Budget(args.budget_s)
    pythons = {"ours": sys.executable}
    if args.upstream_python:
        pythons["upstream"] = args.upstream_python
    with tempfile.TemporaryDirectory() as tmp:
        ok = checks(args, Path(tmp))
        ok &= training(args, pythons, budget, ("none",))
        ok &= onnx_latency(args, args.upstream_python or None, budget, Path(tmp))
    if not args.dry_run:  # compilation on the CPU takes minutes: not in the toy run
        ok &= training(args, pythons, budget, MODES[1:])
    print(f"\ngpu_suite: {'done' if ok else 'FAILED items above'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
