"""A node of the multi-node job, for real: ``python -m pipelines.steps.train_job`` started with
the environment the Trainer's torch plugin / the Training Operator inject (``PET_NNODES``,
``PET_NPROC_PER_NODE``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR``, ``PET_MASTER_PORT``: kubeflow/
training-operator@v1.9.0 ``pkg/controller.v1/pytorch/envvar.go`` l.43-128; Trainer v2's torch
plugin sets the same names) and the variables the step puts in the job. It fetches the dataset
by reference from a real object store (SeaweedFS), trains the tiny preset under ``torchrun``,
hands its files over through the mirror; then the step, following the job on the stand-in API
server, builds the ``checkpoints`` artifact from them. One node only: a 2-node DDP run of the
library is a separate test's subject."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.steps.config import write_run_config
from pipelines.steps.dataset import fetch_dataset
from pipelines.steps.train_job import (
    ENV_CONFIG,
    ENV_DATASET,
    ENV_MIRROR,
    job_name,
    train_on_cluster,
)
from rfdetr.data.synthetic import make_shapes_dataset

RUN = "node-test-run"


@pytest.mark.slow
def test_k8s_a_node_trains_from_the_reference_and_the_step_collects_its_files(
    kube, api, bucket: str, tmp_path: Path
) -> None:
    with socket.socket() as sock:  # a free port for the node's rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    shapes = make_shapes_dataset(tmp_path / "shapes", splits={"train": 4, "valid": 2, "test": 2},
                                 image_size=64)  # fmt: skip
    uri = f"s3://{bucket}/datasets/shapes"
    assert main(["dataset", "upload", str(shapes), uri]) == 0
    fetched = tmp_path / "fetched"
    fetch_dataset(uri, fetched)  # what the fetch step passes on: a reference only
    config = tmp_path / "run_config"
    knobs = {"epochs": 1, "batch_size": 2, "use_ema": False, "model_size": "tiny"}
    overrides = {"num_workers": 0, "train.warmup_epochs": 0}
    write_run_config(config, {"dataset_uri": uri, **knobs, "overrides": overrides})
    mirror_root = f"s3://{bucket}/mirror"
    reference = next(fetched.iterdir()).read_text()
    env = {
        **os.environ,
        ENV_CONFIG: config.read_text(),
        ENV_DATASET: reference,
        ENV_MIRROR: f"{mirror_root}/{RUN}/train",
        "PET_NNODES": "1",
        "PET_NPROC_PER_NODE": "1",
        "PET_NODE_RANK": "0",
        "PET_MASTER_ADDR": "127.0.0.1",
        "PET_MASTER_PORT": str(port),
        "OMP_NUM_THREADS": "1",
    }
    node = subprocess.run(
        [sys.executable, "-m", "pipelines.steps.train_job"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert node.returncode == 0, (node.stdout + node.stderr)[-3000:]
    assert "restored the resume point" not in node.stderr
    # The job restarts the node (node loss): it resumes from what node 0 mirrored.
    again = subprocess.run(
        [sys.executable, "-m", "pipelines.steps.train_job"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert "restored the resume point of a previous attempt" in again.stderr
    assert "resuming from" in again.stderr and "(epoch 0 finished)" in again.stderr
    complete = {"conditions": [{"type": "Complete", "status": "True"}]}
    kube.statuses[("trainjobs", job_name(RUN))] = [complete]
    out = tmp_path / "checkpoints"
    outcome = train_on_cluster(
        config, fetched, out, engine="trainjob", nodes=1, gpus_per_node=0,
        settings={"image": "img:1", "poll_s": 0.01}, mirror_root=mirror_root, run_id=RUN,
        resources=api,
    )  # fmt: skip
    assert outcome.epochs_completed == 1
    kept = {p.name for p in out.iterdir()}
    assert {"checkpoint_best_regular.pth", "log.txt", "results.json", "run.yaml"} <= kept
    assert json.loads((out / "results.json").read_text())["class_names"] == outcome.class_names
