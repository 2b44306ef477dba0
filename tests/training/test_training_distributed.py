"""DDP under ``torchrun``: 2 gloo processes on the CPU train one run and write one set of files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from training_helpers import tiny_options

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from rfdetr.config import RunConfig
    from rfdetr.training import fit
    options, results_dir = json.loads(sys.argv[1]), sys.argv[2]
    result = fit(RunConfig.from_kwargs("tiny", **options))
    best = result.best_checkpoint
    rank = int(os.environ["RANK"])
    # One file per rank: the two processes share stdout, where lines can interleave.
    with open(os.path.join(results_dir, f"rank{rank}.json"), "w") as handle:
        json.dump({
            "rank": rank,
            "epochs": result.epochs_completed,
            "best_exists": best is not None and best.is_file(),
        }, handle)
    """
)


def test_training_ddp_two_gloo_processes_write_one_set_of_files(
    shapes_coco: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ddp"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    options = json.dumps(tiny_options(shapes_coco, out))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    command += ["--nproc_per_node", "2", str(script), options, str(results_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(path.read_text()) for path in sorted(results_dir.glob("rank*.json"))]
    assert sorted(r["rank"] for r in results) == [0, 1]
    assert all(r["epochs"] == 2 and r["best_exists"] for r in results)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [
            "checkpoint.pth", "checkpoint_0.pth", "checkpoint_1.pth", "checkpoint_best_ema.pth",
            "checkpoint_best_regular.pth", "checkpoint_best_total.pth", "log.txt",
            "metrics_plot.png", "results.json", "run.yaml",
        ]
    )  # fmt: skip
    state = torch.load(out / "checkpoint.pth", weights_only=True)
    # Effective batch 2 x 1 x 2 processes = 4; the 6-image split is repeated to 5 steps of 4.
    assert state["global_step"] == 10 and len(state["rng"]) == 2
    assert len((out / "log.txt").read_text().splitlines()) == 2
