"""One node (pod) of a multi-node ``TrainJob`` or ``PyTorchJob``:
``python -m pipelines.steps.train_node RUN_CONFIG DATASET RUN_DIR --mirror URI``.

torchrun reads the node count, node rank and master address from the operator's ``PET_*``
variables. Pods come back after a node is lost with empty folders, so every node restores
``checkpoint.pth`` from the checkpoint mirror and all ranks resume from the same epoch. Rank 0
(node 0) alone writes the run folder, so node 0 alone mirrors it: while training, on failure or
SIGTERM, and after success; the step that created the job reads the results from the mirror.
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
from rfdetr import checkpoints as files


def train_node(
    run_config: str | Path,
    dataset_dir: str | Path,
    run_dir: str | Path,
    mirror_uri: str,
    interval: float = DEFAULT_INTERVAL_S,
) -> None:
    """Train this node's share: ``run_config`` (resolve_config's JSON) on ``dataset_dir`` (a
    folder or reference, fetched here), into ``run_dir`` (written on node 0 only), mirrored
    to ``mirror_uri`` every ``interval`` s (empty: no mirror; a lost node restarts the run).

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
    for name in ("run_config", "dataset_dir", "run_dir"):
        parser.add_argument(name)
    parser.add_argument("--mirror", default="", help="the run's checkpoint mirror URI")
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S)
    args = parser.parse_args(argv)
    with step_errors("train-node"):
        train_node(args.run_config, args.dataset_dir, args.run_dir, args.mirror, args.interval)


if __name__ == "__main__":
    main()
