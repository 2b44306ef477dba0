"""INT8 accuracy on a trained Nano: the mAP50:95 an int8 export loses, and what it gains in speed.

Trains the Nano architecture once from random weights on a seeded synthetic shapes set (no
pretrained weights are reachable here) and caches the run under ``--workdir``; a later call
re-uses ``run/checkpoint_best_total.pth`` (or ``--checkpoint``). The trained checkpoint is then
exported through the library's own ``export_files(quantize="int8")`` to fp32 ONNX and ONNX
Runtime int8 (static QDQ, per-channel, with the sensitivity pass, calibrated on the train split),
and both files converted to OpenVINO IRs as ``--format openvino`` does; each derived file is
scored by the export's accuracy report against the fp32 ONNX file on the valid split, which
calibration never sees (COCO mAP50:95 of both, the delta, max box and score deviation of
matched detections). Last, batch-1 CPU latency of each file, interleaved
in one loop, ``--threads`` intra-op threads.

The training recipe departs from upstream's fine-tuning defaults where training from scratch on
a CPU needs it, and prints what it used: a lower resolution than Nano's 384 (patch 16, two
windows: any multiple of 32), fewer queries and query groups, one learning rate for the encoder
and the rest, cosine schedule, no multi-scale. The architecture (DINOv2-S windowed backbone,
projector, two decoder layers) is Nano's; the model's accuracy is printed with the deltas, and a
delta measured on a model of low mAP says little: read the two together.

    python benchmarks/int8_accuracy.py [--workdir /work/cache/int8-nano] [--resolution 128]
        [--epochs 24] [--train-threads 1] [--threads 2] [--runs 30] [--checkpoint CKPT]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference_latency import ort_runner, time_interleaved
from learning_curve import scratch_recipe
from quantized_latency import ov_runner

from rfdetr.api import RFDETRModel
from rfdetr.config import RunConfig
from rfdetr.data.synthetic import make_shapes_dataset
from rfdetr.export.accuracy import compare_on_dataset
from rfdetr.export.openvino import OpenVINOModel, export_openvino
from rfdetr.export.runtime import ONNXRuntimeModel


def train_options(args: argparse.Namespace, dataset: Path) -> dict[str, object]:
    """The `RunConfig` options of the one training run (printed with the results)."""
    return {
        "dataset_dir": str(dataset),
        "output_dir": str(args.workdir / "run"),
        "resolution": args.resolution,
        "positional_encoding_size": args.resolution // 16,
        "num_queries": args.queries,
        "num_select": args.queries,
        "group_detr": args.group_detr,
        **scratch_recipe(args.epochs, args.batch_size, args.lr),
        "num_workers": 0,
        "checkpoint_interval": args.epochs,  # the best checkpoints are written on each gain
        "device": args.device,
    }


def dataset_for(args: argparse.Namespace) -> Path:
    """The seeded shapes set (made once under the workdir): large objects, three classes."""
    root = args.workdir / "shapes"
    if (root / "valid" / "_annotations.coco.json").is_file():
        return root
    return make_shapes_dataset(
        root,
        splits={"train": args.train_images, "valid": args.valid_images},
        image_size=args.resolution,
        objects_per_image=(1, 2),
        object_scale=(0.3, 0.6),
        seed=0,
    )


def trained(args: argparse.Namespace, dataset: Path) -> Path:
    """The cached best checkpoint, training it first when the workdir has none."""
    run = args.workdir / "run"
    best = run / "checkpoint_best_total.pth"
    options = train_options(args, dataset)
    if not best.is_file():
        torch.set_num_threads(args.train_threads)
        from rfdetr.training import fit

        print("training: " + ", ".join(f"{k}={v}" for k, v in options.items() if "dir" not in k))
        started = time.perf_counter()
        fit(RunConfig.from_kwargs(args.size, **options))
        print(f"training took {time.perf_counter() - started:.0f} s")
    else:
        print(f"training: cached run {run} (delete it to train again)")
    log = run / "log.txt"
    if log.is_file():
        history = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        print(f"{'epoch':>5} {'elapsed s':>9} {'loss':>7} {'mAP50:95':>8} {'EMA mAP50:95':>12}")
        elapsed = 0.0
        for record in history:
            elapsed += record["epoch_time_s"]
            print(
                f"{record['epoch']:>5} {elapsed:>9.0f} {record['train_loss']:>7.3f} "
                f"{record['val_map_50_95']:>8.4f} {record.get('val_ema_map_50_95', -1):>12.4f}"
            )
    return best


def exports(model: RFDETRModel, dataset: Path, folder: Path) -> dict[str, Path]:
    """Every variant exported and scored; returns the file of each, fp32 ONNX first.

    ``export_files(quantize="int8")`` writes the fp32 and the int8 ONNX files and scores the int8
    one; the OpenVINO IRs are those two files converted (what ``--format openvino`` does), scored
    by the same report, so the int8 weights are quantized (and the sensitivity pass run) once.
    """
    started = time.perf_counter()
    result = model.export_files(folder, quantize="int8", calibration=dataset)
    quantized = result.quantized
    print(f"ORT int8 export {time.perf_counter() - started:.0f} s: quantize_onnx "
          f"{quantized.seconds:.0f} s on {quantized.calibration_images} calibration images, "
          f"fp32 kept: {quantized.excluded or 'none'}")  # fmt: skip
    files = {"ORT fp32": result.onnx_path, "ORT int8": result.path}
    reports = {"ORT int8": result.accuracy}
    reference = ONNXRuntimeModel(result.onnx_path)
    for name, source in (("OpenVINO fp32", result.onnx_path), ("OpenVINO int8", result.path)):
        files[name] = export_openvino(source)
        reports[name] = compare_on_dataset(reference, OpenVINOModel(files[name]), dataset)
    print(f"\n{'variant':14s} {'mAP50:95':>8s} {'fp32':>7s} {'delta':>8s} {'max box px':>10s} "
          f"{'max score':>9s} {'matched':>7s} {'unmatched':>9s}")  # fmt: skip
    for name, acc in reports.items():
        print(
            f"{name:14s} {acc.map50_95:8.4f} {acc.map50_95_reference:7.4f} "
            f"{acc.map50_95_delta:+8.4f} {acc.max_box_px:10.2f} {acc.max_score:9.4f} "
            f"{acc.matched:7d} {acc.unmatched:9d}"
        )
    return files


def latency(files: dict[str, Path], side: int, threads: int, runs: int) -> None:
    """Batch-1 latency of each file, interleaved; medians relative to ORT fp32."""
    image = np.random.default_rng(0).standard_normal((1, 3, side, side)).astype(np.float32)
    runners = {}
    for name, path in files.items():
        if name.startswith("ORT"):
            run = ort_runner(path, threads)[0]
        else:
            run = ov_runner(path, threads, "f32")
        runners[name] = (lambda fn: lambda: fn(image))(run)
    times = time_interleaved(runners, runs)
    base = float(np.median(times["ORT fp32"]))
    print(f"\nlatency at {side}x{side}, batch 1, {threads} threads, {runs} runs each:")
    for name, values in times.items():
        median = float(np.median(values))
        print(
            f"  {name:14s} median {median:7.1f} ms  p90 {np.percentile(values, 90):7.1f} ms  "
            f"x{median / base:.2f} of ORT fp32  file {weights(files[name]) / 1e6:.1f} MB"
        )


def weights(path: Path) -> int:
    """Bytes of the file's weights (an OpenVINO IR keeps them in the ``.bin`` beside it)."""
    return (path.with_suffix(".bin") if path.suffix == ".xml" else path).stat().st_size


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/work/cache/int8-nano"))
    parser.add_argument("--checkpoint", type=Path, default=None, help="skip training: this one")
    parser.add_argument("--size", default="nano", help="the preset the architecture comes from")
    parser.add_argument("--resolution", type=int, default=128, help="a multiple of 32")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--group-detr", type=int, default=4)
    parser.add_argument("--train-images", type=int, default=256)
    parser.add_argument("--valid-images", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--device", default="cpu", help="training device (cpu, cuda)")
    parser.add_argument("--train-threads", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="inference threads")
    parser.add_argument("--runs", type=int, default=30)
    return parser.parse_args()


def main() -> int:
    args = parse()
    logging.basicConfig(level=logging.WARNING)
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    dataset = dataset_for(args)
    checkpoint = args.checkpoint or trained(args, dataset)
    torch.set_num_threads(args.threads)
    model = RFDETRModel.from_checkpoint(checkpoint, device="cpu")
    count = sum(p.numel() for p in model.model.parameters())
    print(f"\nmodel: {checkpoint} ({model.config.name} architecture at {model.resolution} px, "
          f"{count / 1e6:.1f} M parameters); dataset {dataset}")  # fmt: skip
    files = exports(model, dataset, args.workdir / "export")
    latency(files, model.resolution, args.threads, args.runs)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
