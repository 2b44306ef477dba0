"""Learning curve: the `tiny` preset trained from scratch on the synthetic shapes dataset.

Generates a seeded shapes dataset (:func:`rfdetr.data.synthetic.make_shapes_dataset`, COCO
layout, three classes), trains with :func:`rfdetr.training.fit` on the CPU and prints, per epoch,
the validation mAP50 and mAP50:95 of the regular and EMA models with the elapsed time. The
target: mAP50 >= 0.5 on the validation split within 10 minutes on 2 CPU cores.

The recipe differs from upstream's fine-tuning defaults where training from random weights at
64 px needs it, and says so: a higher learning rate for both the encoder and the rest, no
multi-scale (the tiny model's scale list would reach 144 px and triple the cost), a cosine
schedule with one warm-up epoch. Everything else is the library's training loop unchanged
(IA-BCE loss, Group DETR, EMA, layer-wise lr decay, gradient clipping, augmentation).

Usage::

    .venv/bin/python benchmarks/learning_curve.py [--epochs 40] [--budget 600] [--threads 1]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import torch

from rfdetr.config import RunConfig
from rfdetr.data.synthetic import make_shapes_dataset
from rfdetr.training import fit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--budget", type=float, default=600.0, help="seconds allowed")
    parser.add_argument("--target", type=float, default=0.5, help="mAP50 to reach")
    parser.add_argument("--train-images", type=int, default=256)
    parser.add_argument("--valid-images", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the model")
    parser.add_argument("--num-workers", type=int, default=1, help="data-loading processes")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument(
        "--amp-dtype",
        choices=["auto", "bf16"],
        default="auto",
        help="bf16: bf16 autocast on a CPU with native bf16 (default auto: fp32 on the CPU)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="rfdetr-curve-"))
    dataset = make_shapes_dataset(
        workdir / "shapes",
        splits={"train": args.train_images, "valid": args.valid_images},
        image_size=args.image_size,
        seed=0,
    )
    options = {
        "dataset_dir": str(dataset),
        "output_dir": str(workdir / "run"),
        **scratch_recipe(args.epochs, args.batch_size, args.lr),
        "num_workers": args.num_workers,
        "checkpoint_interval": args.epochs,
        "device": "cpu",
        "amp_dtype": args.amp_dtype,
    }
    config = RunConfig.from_kwargs("tiny", **options)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"dataset: {dataset} ({args.train_images} train / {args.valid_images} valid images, ")
    print(f"  {args.image_size} px, 3 classes); model: tiny preset at {config.model.resolution} px")
    print("recipe: " + ", ".join(f"{k}={v}" for k, v in options.items() if "dir" not in k))
    started = time.perf_counter()
    result = fit(config)
    total = time.perf_counter() - started
    return report(result.history, args.target, args.budget, total)


def scratch_recipe(epochs: int, batch_size: int, lr: float) -> dict[str, object]:
    """`RunConfig` options of the from-scratch recipe (module docstring) shared by benchmarks."""
    return {
        "epochs": epochs,
        "batch_size": batch_size,
        "grad_accum_steps": 1,
        "lr": lr,
        "lr_encoder": lr,
        "lr_scheduler": "cosine",
        "warmup_epochs": 1.0,
        "multi_scale": False,
        "early_stopping": False,
        "tensorboard": False,
        "progress_bar": False,
        "run_test": False,
    }


def report(history: list[dict], target: float, budget: float, total: float) -> int:
    """Print the per-epoch table and the verdict; returns the exit code (0: target met)."""
    print(f"\n{'epoch':>5} {'elapsed s':>9} {'loss':>7} {'mAP50':>7} {'EMA mAP50':>9} "
          f"{'mAP50:95':>8} {'EMA mAP50:95':>12}")  # fmt: skip
    elapsed, reached = 0.0, None
    for record in history:
        elapsed += record["epoch_time_s"]
        best50 = max(record["val_map_50"], record.get("val_ema_map_50", -1.0))
        if reached is None and best50 >= target:
            reached = (record["epoch"], elapsed)
        print(
            f"{record['epoch']:>5} {elapsed:>9.1f} {record['train_loss']:>7.3f} "
            f"{record['val_map_50']:>7.3f} {record.get('val_ema_map_50', -1):>9.3f} "
            f"{record['val_map_50_95']:>8.3f} {record.get('val_ema_map_50_95', -1):>12.3f}"
        )
    print(f"\ntotal wall time {total:.0f} s (including dataset loading and final evaluation)")
    if reached is None:
        print(f"FAIL: mAP50 never reached {target}")
        return 1
    epoch, seconds = reached
    verdict = "PASS" if seconds <= budget else "FAIL (too slow)"
    print(f"{verdict}: mAP50 >= {target} after epoch {epoch}, {seconds:.0f} s of training")
    return 0 if seconds <= budget else 1


if __name__ == "__main__":
    raise SystemExit(main())
