"""One node of a multi-node training job: a Kubeflow ``TrainJob`` or ``PyTorchJob`` pod.

Every pod runs ``python -m pipelines.steps.train_node RUN_CONFIG DATASET RUN_DIR --mirror URI``
with the environment the operator injects (``PET_NNODES``, ``PET_NODE_RANK``,
``PET_NPROC_PER_NODE``, ``PET_MASTER_ADDR``, ``PET_MASTER_PORT``; the Training Operator also
sets ``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE``, ``RANK``). Each node fetches the dataset
and the resume point itself; ``torch.distributed.run`` then starts this node's workers.

Pods restart after a node is lost, with empty folders: every node restores ``checkpoint.pth``
from the checkpoint mirror before training, so all ranks resume from the same epoch. Only
global rank 0 (on node 0) writes the run folder, so node 0 alone mirrors it: while training,
when it fails, and a last time after success. The step that created the job reads the results
from the mirror (and then clears it with :meth:`CheckpointMirror.finish`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from pathlib import Path

from pipelines.steps.common import step_errors
from pipelines.steps.config import read_run_config
from pipelines.steps.dataset import dataset_folder
from pipelines.steps.mirror import DEFAULT_INTERVAL_S, CheckpointMirror
from pipelines.steps.train import _prepared, run_distributed
from pipelines.steps.weights import resolve_weights
from rfdetr.training import checkpoint as files


def train_node(
    run_config: str | Path,
    dataset_dir: str | Path,
    run_dir: str | Path,
    mirror_uri: str,
    *,
    interval: float = DEFAULT_INTERVAL_S,
) -> None:
    """Train this node's share of the job: restore the mirror, run torchrun, mirror (node 0).

    Args:
        run_config: the ``resolve_config`` step's JSON.
        dataset_dir: a dataset folder or reference (fetched and verified on every node).
        run_dir: this node's run folder (written on node 0 only).
        mirror_uri: the run's checkpoint mirror, ``s3://bucket/prefix``; empty: none (a lost
            node then restarts the run from scratch).
        interval: seconds between mirror syncs on node 0.

    Raises:
        StepError: the node's workers failed; StorageError: the mirror or data could not be read.
    """
    work = Path(run_dir)
    work.mkdir(parents=True, exist_ok=True)
    writer = os.environ.get("PET_NODE_RANK", "0") == "0"
    mirror = CheckpointMirror(mirror_uri, interval) if mirror_uri else None
    config = read_run_config(run_config)
    if not writer and mirror is not None:  # only node 0 writes: a resume point here is stale
        (work / files.LAST).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as tmp, dataset_folder(dataset_dir) as data:
        weights = resolve_weights(config.train.pretrain_weights, Path(tmp))
        if mirror is not None:
            mirror.restore(work)
        config, _ = _prepared(config, data, work, weights)
        mirrored = writer and mirror is not None
        with mirror.watching(work) if mirrored else contextlib.nullcontext():
            run_distributed(config, None, Path(tmp))
        if mirrored:
            mirror.sync(work)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.steps.train_node")
    parser.add_argument("run_config")
    parser.add_argument("dataset_dir")
    parser.add_argument("run_dir")
    parser.add_argument("--mirror", default="", help="the run's checkpoint mirror URI")
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S)
    args = parser.parse_args(argv)
    with step_errors("train-node"):
        train_node(
            args.run_config, args.dataset_dir, args.run_dir, args.mirror, interval=args.interval
        )


if __name__ == "__main__":
    main()
