"""Batch-1 CPU latency of the low-precision exports, and what they cost in accuracy.

Latency (per size, default Nano at 384 and Seg-Nano at 312): a random-weight model (every weight
perturbed by N(0, 0.02), as benchmarks/inference_latency.py does) is exported through
``export_files(quantize="int8", calibration=...)`` (calibrated on a synthetic shapes set made
here; random weights make its accuracy meaningless, only speed is read from it), then converted
to OpenVINO IRs. Timed in ``--rounds`` rounds of ``--runs`` calls each, interleaved call by call,
``--threads`` intra-op threads, batch 1, one fixed normalised image; every ratio is the median
over rounds of the round's ratio of medians, for wall time and for process CPU time (the latter
barely moves with the load of a shared machine): ONNX Runtime fp32 and int8 (QDQ; also the
int8 file without the sensitivity pass, every op quantized), OpenVINO fp32 (``f32`` precision
hint), OpenVINO bf16 (the same IR with the ``bf16`` hint) and OpenVINO int8 (the QDQ file
converted). With ``--upstream-venv`` (a venv with ``rfdetr==1.11.2``) upstream's own fp32 export
of the same size runs in the same loop (benchmarks/inference_latency.py makes it).

Accuracy (``--checkpoint CKPT --dataset DIR``): the trained checkpoint is exported to int8
(ONNX Runtime), OpenVINO fp32 and OpenVINO int8, each measured by the export's own report
against the fp32 ONNX file on the dataset's valid split (mAP50:95 delta, box/score deviation).

    python benchmarks/quantized_latency.py [--sizes nano seg-nano] [--runs 10] [--rounds 5]
        [--threads 2] [--upstream-venv DIR] [--checkpoint CKPT --dataset DIR] [--workdir DIR]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference_latency import ort_runner, upstream_export

from rfdetr.api import RFDETRModel
from rfdetr.data.synthetic import SHAPE_CLASSES, make_shapes_dataset
from rfdetr.export.openvino import OpenVINOModel, export_openvino
from rfdetr.export.quantize import calibration_images, preprocessed, quantize_onnx


def perturbed(size: str) -> object:
    torch.manual_seed(0)
    names = list(SHAPE_CLASSES)
    model = RFDETRModel(pretrain_weights=None, size=size, device="cpu", class_names=names)
    with torch.no_grad():
        for parameter in model.model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model


def ov_runner(xml: Path, threads: int, precision: str) -> Callable[[np.ndarray], object]:
    runtime = OpenVINOModel(xml, threads=threads, precision=precision)
    return lambda x: runtime.request.infer({"input": x})


def bench_size(size: str, args: argparse.Namespace, folder: Path) -> None:
    model = perturbed(size)
    side = model.resolution
    dataset = make_shapes_dataset(
        folder / "shapes", splits={"train": 32, "valid": 8}, image_size=(side, 2 * side), seed=1
    )
    started = time.perf_counter()
    result = model.export_files(folder / size, quantize="int8", calibration=dataset)
    quantize_s = time.perf_counter() - started
    fp32, int8 = result.onnx_path, result.path
    files = calibration_images(dataset, list(SHAPE_CLASSES))
    inputs = preprocessed(files, fp32)
    every = quantize_onnx(fp32, int8.with_name("all.int8.onnx"), inputs, sensitivity=False).path
    ov_fp32, ov_int8 = export_openvino(fp32), export_openvino(int8)
    image = np.random.default_rng(0).standard_normal((1, 3, side, side)).astype(np.float32)
    ort_fp32, _ = ort_runner(fp32, args.threads)
    ort_int8, _ = ort_runner(int8, args.threads)
    ort_every, _ = ort_runner(every, args.threads)
    runs = {
        "ORT fp32": lambda: ort_fp32(image),
        "ORT int8 (QDQ)": lambda: ort_int8(image),
        "ORT int8, no fp32 kept": lambda: ort_every(image),
        "OpenVINO fp32": (lambda run: lambda: run(image))(ov_runner(ov_fp32, args.threads, "f32")),
        "OpenVINO bf16 hint": (lambda run: lambda: run(image))(
            ov_runner(ov_fp32, args.threads, "bf16")
        ),
        "OpenVINO int8 (QDQ)": (lambda run: lambda: run(image))(
            ov_runner(ov_int8, args.threads, "f32")
        ),
    }
    if args.upstream_venv is not None:
        _, static, _ = upstream_export(args.upstream_venv / "bin" / "python", size, folder)
        upstream, _ = ort_runner(static, args.threads)
        runs["upstream 1.11.2 ORT fp32"] = lambda: upstream(image)
    quantized = result.quantized
    print(f"\n{size} at {side}x{side}, {args.threads} threads, batch 1, {args.rounds} rounds of "
          f"{args.runs} interleaved runs each (load average {os.getloadavg()[0]:.2f})")  # fmt: skip
    print(
        f"  int8: {quantized.calibration_images} calibration images, fp32 kept: "
        f"{quantized.excluded or 'none'}; sensitivity pass + quantization + report "
        f"{quantize_s:.0f} s (of which quantize_onnx {quantized.seconds:.0f} s)"
    )
    report(rounds(runs, args.runs, args.rounds))
    print(f"  load average after timing {os.getloadavg()[0]:.2f}")
    sizes = {"fp32 .onnx": fp32, "int8 .onnx": int8, "fp32 .bin": ov_fp32.with_suffix(".bin")}
    sizes["int8 .bin"] = ov_int8.with_suffix(".bin")
    print("  files: " + ", ".join(f"{k} {p.stat().st_size / 1e6:.1f} MB" for k, p in sizes.items()))
    if args.upstream_venv is None:
        print("  upstream column skipped: no --upstream-venv (a venv with rfdetr==1.11.2)")


def rounds(
    runners: dict[str, Callable[[], object]], runs: int, count: int
) -> dict[str, np.ndarray]:
    """``[count, 2]`` per runner: each round's median wall and process-CPU ms of ``runs`` calls,
    the runners interleaved call by call (CPU time, all threads of this process, barely moves
    with the load of a shared machine; wall time does)."""
    for run in runners.values():  # warm-up: first-call allocations and lazy init
        run()
    medians: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    for _ in range(count):
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
        for _ in range(runs):
            for name, run in runners.items():
                wall, cpu = time.perf_counter(), time.process_time()
                run()
                times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
        for name, values in times.items():
            medians[name].append(tuple(np.median(np.array(values) * 1e3, axis=0)))
    return {name: np.array(values) for name, values in medians.items()}


def report(medians: dict[str, np.ndarray]) -> None:
    """Per runner: median over rounds of the round medians, and of the per-round ratios to ORT
    fp32 and to upstream (wall / CPU)."""
    names = ["ORT fp32", "upstream 1.11.2 ORT fp32"]
    for name, values in medians.items():
        wall, cpu = np.median(values, axis=0)
        line = f"  {name:26s} wall {wall:7.1f} ms  CPU {cpu:7.1f} ms"
        for label, base in zip(("ORT fp32", "upstream"), names, strict=True):
            if base in medians:
                ratio = np.median(values / medians[base], axis=0)
                line += f"  x{ratio[0]:.2f} / x{ratio[1]:.2f} of {label}"
        print(line)
    if names[1] in medians:
        per_round = medians["ORT int8 (QDQ)"][:, 0] / medians[names[1]][:, 0]
        print("  int8 / upstream wall by round: " + " ".join(f"{v:.2f}" for v in per_round))


def accuracy(checkpoint: Path, dataset: Path, folder: Path) -> None:
    model = RFDETRModel.from_checkpoint(checkpoint, device="cpu")
    print(f"\naccuracy of {checkpoint} ({model.config.name} at {model.resolution}) on {dataset}")
    for name, options in (
        ("ORT int8", {"quantize": "int8"}),
        ("OpenVINO fp32", {"format": "openvino"}),
        ("OpenVINO int8", {"quantize": "int8", "format": "openvino"}),
    ):
        result = model.export_files(folder / name.replace(" ", "-"), calibration=dataset, **options)
        if result.quantized is not None:
            print(f"  {name}: fp32 kept: {result.quantized.excluded or 'none'}")
        print(f"  {name}: {result.accuracy.summary()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", default=["nano", "seg-nano"])
    parser.add_argument("--runs", type=int, default=10, help="interleaved runs per round")
    parser.add_argument("--rounds", type=int, default=5, help="ratios are medians over rounds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--upstream-venv", type=Path, default=None)
    parser.add_argument("--checkpoint", type=Path, default=None, help="trained model (accuracy)")
    parser.add_argument("--dataset", type=Path, default=None, help="its dataset (accuracy)")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    folder = args.workdir or Path(tempfile.mkdtemp(prefix="rfdetr-int8-bench-"))
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    for size in args.sizes:
        bench_size(size, args, folder / size)
    if args.checkpoint is not None and args.dataset is not None:
        accuracy(args.checkpoint, args.dataset, folder / "accuracy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
