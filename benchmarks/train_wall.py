"""Wall time of ``model.train()``: ours vs upstream rfdetr 1.11.2, interleaved rounds.

The call is the one upstream's training guide shows (``model.train(dataset_dir=..., epochs=...,
batch_size=4, grad_accum_steps=4, lr=1e-4, output_dir=...)``) on Nano at 192 px, one epoch of
32 synthetic shapes images (:func:`rfdetr.data.synthetic.make_shapes_dataset`, COCO layout)
plus validation, random initial weights (offline), CPU, the same thread count on both sides.
Each round runs one fresh process per side (the two packages are both named ``rfdetr``): ours
fp32, upstream fp32 and ours ``amp_dtype="bf16"`` in turn, so background load on a shared
machine hits all alike (within a round the sides still run minutes apart: use several rounds).
Each process reports the wall time of the ``train()`` call alone (model construction and the
imports excluded) and of the whole process.

Multi-scale (both sides' default) makes this short call a lottery: the epoch has only 5
optimizer steps (both sides draw 80 images with replacement from a split this small), ours draws
one size per step from a seeded stream (seed 42: 352, 320, 352, 192, 352 px, about 2x the mean
pixel count of the 64-352 px list), upstream one per batch at random. ``--no-multi-scale``
trains both at 192 px and compares the same work.

Printed: per round the three times; the medians; the ratios ours/upstream per round and of the
medians (lower is faster).

Usage::

    .venv/bin/python benchmarks/train_wall.py [--rounds 3] [--threads 2] [--no-multi-scale]
        [--no-bf16] [--upstream-python /work/upstream-venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

SIDE_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    started = time.perf_counter()
    import torch
    from rfdetr import RFDETRNano
    dataset, output, threads, amp = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    multi_scale = sys.argv[5] == "1"
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = RFDETRNano(pretrain_weights=None, device="cpu", resolution=192)
    options = dict(dataset_dir=dataset, epochs=1, batch_size=4, grad_accum_steps=4, lr=1e-4,
                   output_dir=output, device="cpu", tensorboard=False, num_workers=0,
                   multi_scale=multi_scale)
    if amp != "fp32":
        options["amp_dtype"] = amp
    begin = time.perf_counter()
    model.train(**options)
    end = time.perf_counter()
    print(json.dumps({"train_s": end - begin, "process_s": end - started}), flush=True)
    """
)


def run_side(
    python: str, ours: bool, dataset: Path, threads: int, amp: str, multi_scale: bool
) -> dict[str, float]:
    """One fresh process running the seed call; returns its timings."""
    extra = [str(dataset), "", str(threads), amp, str(int(multi_scale))]
    return run_script(python, ours, SIDE_SCRIPT, extra, threads, '{"train_s"')


def run_script(
    python: str, ours: bool, script: str, argv: list[str], threads: int, marker: str
) -> dict:
    """Run ``script`` in a fresh process of ``python`` (ours: this checkout's ``rfdetr`` on
    ``PYTHONPATH``) with ``argv``, the empty one replaced by a temporary output folder; returns
    the JSON of its last stdout line starting with ``marker``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if ours:  # this checkout's rfdetr, not whichever one is installed
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    env |= {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory(prefix="rfdetr-wall-") as output:
        done = subprocess.run(
            [python, "-W", "ignore", "-c", script, *(a or output for a in argv)],
            env=env, cwd=output, capture_output=True, text=True, check=False,
        )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith(marker)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{'ours' if ours else 'upstream'} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--upstream-python", default="/work/upstream-venv/bin/python")
    parser.add_argument("--no-bf16", action="store_true", help="skip ours with amp_dtype bf16")
    parser.add_argument(
        "--no-multi-scale", action="store_true", help="multi_scale=False on both sides (see above)"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from rfdetr.data.synthetic import make_shapes_dataset

    root = Path(tempfile.mkdtemp(prefix="rfdetr-wall-data-"))
    dataset = make_shapes_dataset(
        root, splits={"train": 32, "valid": 16, "test": 16}, image_size=192, seed=0
    )
    sides = {"ours fp32": (sys.executable, True, "fp32")}
    sides["upstream fp32"] = (args.upstream_python, False, "fp32")
    if not args.no_bf16:
        sides["ours bf16"] = (sys.executable, True, "bf16")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    print("call: Nano 192 px, random init, 1 epoch of 32 images (batch 4, grad_accum 4) + "
          f"validation of 16, {args.threads} threads, 0 loader workers, "
          f"multi_scale={not args.no_multi_scale}")  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in sides}
    for index in range(args.rounds):
        cells = []
        for name, (python, ours, amp) in sides.items():
            started = time.perf_counter()
            reply = run_side(python, ours, dataset, args.threads, amp, not args.no_multi_scale)
            times[name].append(reply["train_s"])
            cells.append(f"{name} {reply['train_s']:6.2f} s ({time.perf_counter() - started:.1f})")
        ratio = times["ours fp32"][-1] / times["upstream fp32"][-1]
        print(f"round {index + 1}: " + ", ".join(cells) + f"; ours/upstream {ratio:.2f}x "
              f"(load {os.getloadavg()[0]:.2f})")  # fmt: skip
    medians = {name: statistics.median(values) for name, values in times.items()}
    up = medians["upstream fp32"]
    print("train() wall, median of rounds (process wall incl. imports in parentheses above):")
    for name, value in medians.items():
        print(f"  {name:14s} {value:6.2f} s  = {value / up:.2f}x upstream fp32")
    ratios = [o / u for o, u in zip(times["ours fp32"], times["upstream fp32"], strict=True)]
    print(f"ours/upstream fp32 per round: {', '.join(f'{r:.2f}' for r in ratios)}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
