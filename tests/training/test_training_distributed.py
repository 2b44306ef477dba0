"""DDP under ``torchrun``: 2 gloo processes on the CPU train one run and write one set of files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from training_helpers import tiny_options

from rfdetr.checkpoints.formats import CheckpointError
from rfdetr.config import RunConfig

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


def test_training_one_node_of_a_multinode_job_without_torchrun_exits_2(
    shapes_coco: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """A TrainJob pod running ``rfdetr train`` directly (no torchrun) gets only ``PET_*``
    (kubeflow/trainer torch plugin): it must not train alone as if it were the whole job."""
    from rfdetr.cli import main

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PET_NNODES", "2")
    monkeypatch.setenv("PET_NODE_RANK", "1")
    argv = ["train", str(shapes_coco), "--model", "tiny", "--output-dir", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "PET_NNODES=2" in err and "torchrun" in err and "\n" not in err
    assert not (tmp_path / "o").exists()


CASES = ([3, 3], [3, 1], [3, None])  # each rank's resume epoch (None: no checkpoint)


def _resume_worker(rank: int, init: str, queue: Any) -> None:
    from rfdetr.training.distributed import DistInfo
    from rfdetr.training.loop import _check_same_resume

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    config = RunConfig.from_kwargs("tiny", dataset_dir="-", resume="run/checkpoint.pth")
    for case, epochs in enumerate(CASES):
        resume = None if epochs[rank] is None else {"epoch": epochs[rank]}
        try:
            _check_same_resume(config, resume, DistInfo(rank, 2, rank, owns_group=True))
            queue.put((case, rank, "ok"))
        except CheckpointError as err:
            queue.put((case, rank, str(err)))
    dist.destroy_process_group()


def test_training_ranks_resuming_from_different_epochs_all_fail(tmp_path: Path) -> None:
    """Each node reads its own copy of checkpoint.pth; a stale copy on one node must stop every
    rank with the same error, not leave the others waiting in a collective."""
    queue = torch.multiprocessing.get_context("spawn").Queue()
    init = f"file://{tmp_path / 'rendezvous'}"
    torch.multiprocessing.start_processes(
        _resume_worker, args=(init, queue), nprocs=2, start_method="spawn"
    )
    outcomes: dict[int, dict[int, str]] = {}
    for _ in range(2 * len(CASES)):
        case, rank, message = queue.get(timeout=60)
        outcomes.setdefault(case, {})[rank] = message
    assert outcomes[0] == {0: "ok", 1: "ok"}
    for case in (1, 2):
        message = outcomes[case][0]
        assert outcomes[case][1] == message and f"after epochs {CASES[case]}" in message
