"""ONNX export by conversion (the eager model traced) against an older tree's export graph.

Exports the same model (a size with random weights, seed 0, ``inference_latency.our_model``)
twice: with the ``rfdetr`` of ``--before-tree`` (another checkout, e.g. one with the former
hand-written graph ``rfdetr/export/graph_backbone.py``), in a subprocess, and with this tree.
Then it times both files, and this tree's ``simplify=True`` copy, with ONNX Runtime
(CPUExecutionProvider, ``--threads`` intra-op threads, full graph optimisation, batch 1),
interleaved, and prints the median and minimum latency, the ratios to the older file, the file
sizes and the largest output difference between the two exports.

Usage:
    git worktree add /tmp/before <old commit>
    python benchmarks/export_conversion.py --before-tree /tmp/before [--size nano] [--runs 30]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import argparse
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import torch
from inference_latency import max_differences, ort_runner, our_model, time_interleaved

from rfdetr.export.exporter import export_model

EXPORT = textwrap.dedent(
    """
    import sys
    tree, size, out = sys.argv[1:4]
    sys.path[:0] = [tree, tree + "/benchmarks"]
    import torch
    from inference_latency import our_model
    from rfdetr.export.exporter import export_model
    torch.manual_seed(0)
    print(export_model(our_model(size, None), out).path)
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before-tree", type=Path, required=True)
    parser.add_argument("--size", default="nano")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(args.before_tree.resolve())}
        command = [sys.executable, "-c", EXPORT, str(args.before_tree), args.size, f"{tmp}/before"]
        done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
        files = {"before": Path(done.stdout.split()[-1])}
        torch.manual_seed(0)  # the same initial weights as the export above
        model = our_model(args.size, None)
        files["after"] = export_model(model, f"{tmp}/after").path
        files["after, simplify=True"] = export_model(model, f"{tmp}/slim", simplify=True).path
        res = model.resolution
        image = np.random.default_rng(0).standard_normal((1, 3, res, res)).astype(np.float32)
        runs = {name: ort_runner(path, args.threads)[0] for name, path in files.items()}
        times = time_interleaved(
            {name: (lambda r=r: r(image)) for name, r in runs.items()}, args.runs
        )
        outputs = {name: run(image) for name, run in runs.items()}
        names = ["dets", "labels", "masks"][: len(outputs["after"])]
        print(f"{args.size} at {res}x{res}, batch 1, {args.threads} threads, {args.runs} runs each")
        for name, t in times.items():
            size_mb = files[name].stat().st_size / 1e6
            median, low = np.median(t), t.min()
            print(f"  {name:22s} median {median:6.1f} ms  min {low:6.1f} ms  {size_mb:5.1f} MB")
        for name in list(files)[1:]:
            ratios = [f(times[name]) / f(times["before"]) for f in (np.median, np.min)]
            print(f"  {name} / before: {ratios[0]:.3f}x median, {ratios[1]:.3f}x min latency")
        print(
            f"  max |after - before|: {max_differences(outputs['after'], outputs['before'], names)}"
        )


if __name__ == "__main__":
    main()
