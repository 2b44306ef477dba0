"""Multi-node DDP for real: two "nodes" on 127.0.0.1, each one job-node process
(``python -m pipelines.steps.train_job``: the dataset by reference from SeaweedFS, the resume
point from the mirror, ``torch.distributed.run`` with one gloo worker, CPU) started with exactly
the environment a Kubeflow operator gives a pod, and nothing else to find the other node.

The environment contracts (the test's stand-in for a cluster DNS name is 127.0.0.1, and a free
port replaces the operator's fixed one):

- Training Operator v1 ``PyTorchJob`` (kubeflow/training-operator ``v1.9.0``):
  ``pkg/controller.v1/pytorch/envvar.go`` ``setPodEnv`` (l.43-128): ``PYTHONUNBUFFERED``,
  ``WORLD_SIZE`` = replicas x ``nprocPerNode``, ``RANK`` = pod index (Master 0, Worker i -> i+1),
  ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK`` = that rank, ``PET_NNODES`` = replicas;
  ``pkg/controller.v1/pytorch/master.go`` ``MasterEnvVarGenerator.Generate``: ``MASTER_PORT``,
  ``PET_MASTER_PORT``, ``MASTER_ADDR``, ``PET_MASTER_ADDR`` (``<job>-master-0``).
- Trainer v2 ``TrainJob`` with the ``torch-distributed`` runtime (kubeflow/trainer, commit
  ``06b555d6ef884257016880d2f719121652b63e23``; no tag in the stored copy):
  ``pkg/runtime/framework/plugins/torch/torch.go`` ``EnforceMLPolicy`` (l.151-174, the "Add
  PyTorch distributed PET_ values for torchrun" block): only ``PET_NNODES``,
  ``PET_NPROC_PER_NODE``, ``PET_NODE_RANK`` (the Job completion index), ``PET_MASTER_ADDR``
  (``<job>-node-0-0.<job>``), ``PET_MASTER_PORT`` (``constants.ContainerTrainerPort``, 29500).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import free_port
from training_helpers import TINY_RUN, tiny_options

from rfdetr.config import RunConfig
from rfdetr.data.synthetic import make_shapes_dataset
from rfdetr.training import fit

pytestmark = pytest.mark.slow
NODES = 2
# Two micro-batches of 2 summed by one gradient all-reduce vs one batch of 4 differ by float
# summation order (~1e-7 relative). 1e-5 absolute is a tenth of one AdamW step (lr 1e-4),
# so a wrong normaliser, sample split or learning rate would show.
TOLERANCE = 1e-5


def pytorchjob_env(node: int, port: int) -> dict[str, str]:
    """What the Training Operator sets on replica ``node`` (Master 0, Worker 0 -> 1)."""
    return {
        "PYTHONUNBUFFERED": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "PET_MASTER_ADDR": "127.0.0.1",
        "PET_MASTER_PORT": str(port),
        "WORLD_SIZE": str(NODES * 1),
        "RANK": str(node),
        "PET_NPROC_PER_NODE": "1",
        "PET_NODE_RANK": str(node),
        "PET_NNODES": str(NODES),
    }


def trainjob_env(node: int, port: int) -> dict[str, str]:
    """What Trainer v2's torch plugin sets on node ``node`` (its Job completion index)."""
    return {
        "PET_NNODES": str(NODES),
        "PET_NPROC_PER_NODE": "1",
        "PET_NODE_RANK": str(node),
        "PET_MASTER_ADDR": "127.0.0.1",
        "PET_MASTER_PORT": str(port),
    }


_LAUNCH_VARS = ("MASTER_", "WORLD_SIZE", "RANK", "LOCAL_RANK", "PET_", "TORCHELASTIC_")


def start_nodes(
    root: Path, config: Path, reference: str, env_of: Any, mirror: str
) -> list[subprocess.Popen[bytes]]:
    """Both nodes, each in its own folder (its own "disk", as TMPDIR) and session (its pod)."""
    from pipelines.steps.train_job import ENV_CONFIG, ENV_DATASET, ENV_MIRROR

    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(_LAUNCH_VARS)}
    base |= {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    base |= {ENV_CONFIG: config.read_text(), ENV_DATASET: reference, ENV_MIRROR: mirror}
    procs = []
    for node in range(NODES):
        folder = root / f"node{node}"
        folder.mkdir(parents=True)
        env = base | env_of(node, port) | {"TMPDIR": str(folder)}
        with (folder / "node.log").open("wb") as log:  # the child keeps its own descriptor
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "pipelines.steps.train_job"],
                    cwd=folder,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own pod: signals reach only this node
                )
            )
    return procs


def kill_node(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a node's process tree, as losing the pod does (torchrun starts each worker in a
    session of its own, so a process group does not hold them all)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:  # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")"
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
    tree, frontier = [proc.pid], [proc.pid]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def wait_all(procs: list[subprocess.Popen[bytes]], timeout: float = 150) -> list[int]:
    deadline = time.monotonic() + timeout
    try:
        return [proc.wait(timeout=max(1.0, deadline - time.monotonic())) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                kill_node(proc)


def logs(root: Path) -> str:
    return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(root.glob("*/node.log")))


def mirrored(mirror: str, tmp: Path, name: str) -> Path:
    """``name`` downloaded from the mirror into ``tmp``."""
    from rfdetr.storage import download_file, parse_uri

    download_file(parse_uri(mirror).child(name), tmp / name)
    return tmp / name


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert state["global_step"] == 10  # 2 epochs x 5 steps of 4 images
    return {**state["model"], **{f"ema.{k}": v for k, v in state["ema"]["module"].items()}}


def upload(dataset: Path, bucket: str, tmp: Path) -> str:
    """The dataset reference the fetch step passes on (uploaded to the object store)."""
    from pipelines.cli import main
    from pipelines.steps.dataset import fetch_dataset

    uri = f"s3://{bucket}/datasets/shapes"
    assert main(["dataset", "upload", str(dataset), uri]) == 0
    fetch_dataset(uri, tmp / "fetched")
    return next((tmp / "fetched").iterdir()).read_text()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    # 6 images, drawn as 5 steps of 4 per epoch (upstream's tiny-split rule)
    return make_shapes_dataset(root, splits={"train": 6, "valid": 2}, image_size=64)


@pytest.fixture(scope="module")
def run_config(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The resolve_config step's JSON: batch 2 per process, x 2 nodes = effective batch 4."""
    config = RunConfig.from_kwargs(
        "tiny", **{**TINY_RUN, "dataset_dir": str(dataset), "batch_size": 2}
    )
    path = tmp_path_factory.mktemp("config") / "run_config.json"
    path.write_text(json.dumps(config.model_dump(mode="json")))
    return path


@pytest.fixture(scope="module")
def one_process(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same run in one process with batch 4: the effective batch of 2 nodes x 2."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("one") / "run"
    config = RunConfig.from_kwargs("tiny", **tiny_options(dataset, out, batch_size=4))
    return weights(fit(config).output_dir)


def assert_close(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=TOLERANCE, msg=name)


def test_multinode_two_nodes_equal_one_process_and_only_rank0_writes(
    run_config: Path, dataset: Path, one_process: dict[str, Any], tmp_path: Path, bucket: str
) -> None:
    """The Training Operator's environment; an uninterrupted run."""
    mirror = f"s3://{bucket}/mirror/run/train"
    codes = wait_all(start_nodes(tmp_path, run_config, upload(dataset, bucket, tmp_path),
                                 pytorchjob_env, mirror))  # fmt: skip
    assert codes == [0, 0], logs(tmp_path)
    node0, node1 = ((tmp_path / f"node{i}" / "node.log").read_text() for i in range(NODES))
    assert "effective batch: 4 images per optimizer step" in node0
    assert "mirrored" in node0 and "mirrored" not in node1  # rank 1's node writes nothing
    # ... yet its `rfdetr train` reports the run as rank 0 read it (broadcast, not its own disk)
    assert '"epochs_completed": 2' in node1
    log = mirrored(mirror, tmp_path, "log.txt").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [0, 1]
    assert_close(weights(mirrored(mirror, tmp_path, "checkpoint.pth").parent), one_process)


def test_multinode_node_lost_mid_epoch_resumes_from_the_mirror(
    run_config: Path, dataset: Path, one_process: dict[str, Any], tmp_path: Path, bucket: str
) -> None:
    """Trainer v2's environment. Node 1 dies in epoch 1; the job's pods are deleted (SIGTERM,
    as the kubelet sends) and recreated with empty folders; both resume from epoch 0's
    checkpoint in the object-store mirror, which node 0 kept current."""
    mirror = f"s3://{bucket}/mirror/run/train"
    reference = upload(dataset, bucket, tmp_path)
    first = tmp_path / "first"
    procs = start_nodes(first, run_config, reference, trainjob_env, mirror)
    deadline = time.monotonic() + 120
    while not any(p.read_text().strip() for p in first.glob("node0/*/run/log.txt")):
        assert time.monotonic() < deadline and procs[0].poll() is None, logs(first)
        time.sleep(0.05)  # until epoch 0 is written: epoch 1 runs
    kill_node(procs[1])  # node 1 lost: its launcher and its worker
    try:
        procs[0].wait(timeout=15)  # its worker may see the lost peer and fail by itself
    except subprocess.TimeoutExpired:
        procs[0].send_signal(signal.SIGTERM)  # else the pod is deleted: SIGTERM to PID 1
    assert wait_all(procs, timeout=60)[0] != 0, logs(first)
    first_log = mirrored(mirror, first, "log.txt").read_text().splitlines()
    assert len(first_log) == 1, "the kill came after epoch 1 ended; nothing left to resume"

    again = tmp_path / "again"
    assert wait_all(start_nodes(again, run_config, reference, trainjob_env, mirror)) == [0, 0], (
        logs(again)
    )
    for node in range(NODES):
        assert "restored the resume point" in (again / f"node{node}" / "node.log").read_text()
    resumed_log = mirrored(mirror, again, "log.txt").read_text().splitlines()
    assert resumed_log[0] == first_log[0]  # epoch 0 restored from the mirror, not trained again
    assert [json.loads(line)["epoch"] for line in resumed_log] == [0, 1]
    assert_close(weights(mirrored(mirror, again, "checkpoint.pth").parent), one_process)
