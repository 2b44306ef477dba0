"""Multi-node DDP for real: two "nodes" on 127.0.0.1, each one ``pipelines.steps.train_node``
process that starts ``torch.distributed.run`` (one gloo worker per node, CPU) with exactly the
environment a Kubeflow operator gives a pod, and nothing else to find the other node.

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import free_port

from rfdetr.config import RunConfig
from rfdetr.data.synthetic import make_shapes_dataset
from rfdetr.training import fit

pytestmark = pytest.mark.slow
NODES = 2
OPTIONS = {  # 6 images, drawn as 5 steps of 4 per epoch (upstream's tiny-split rule)
    "epochs": 2,
    "grad_accum_steps": 1,
    "num_workers": 0,
    "multi_scale": False,
    "checkpoint_interval": 1,
    "device": "cpu",
    "tensorboard": False,
    "progress_bar": False,
}
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
    root: Path, config: Path, dataset: Path, env_of: Any, mirror: str = ""
) -> list[subprocess.Popen[bytes]]:
    """Both nodes, each in its own folder (its own "disk") and process group (its own pod)."""
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(_LAUNCH_VARS)}
    base |= {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = []
    for node in range(NODES):
        folder = root / f"node{node}"
        folder.mkdir(parents=True)
        command = [sys.executable, "-m", "pipelines.steps.train_node", str(config), str(dataset)]
        command += ["run", "--mirror", mirror, "--interval", "0.3"]
        env = base | env_of(node, port)
        with (folder / "node.log").open("wb") as log:  # the child keeps its own descriptor
            procs.append(
                subprocess.Popen(
                    command,
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


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert state["global_step"] == 10  # 2 epochs x 5 steps of 4 images
    return {**state["model"], **{f"ema.{k}": v for k, v in state["ema"]["module"].items()}}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    return make_shapes_dataset(root, splits={"train": 6, "valid": 2}, image_size=64)


@pytest.fixture(scope="module")
def run_config(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The resolve_config step's JSON: batch 2 per process, x 2 nodes = effective batch 4."""
    config = RunConfig.from_kwargs("tiny", dataset_dir=str(dataset), batch_size=2, **OPTIONS)
    path = tmp_path_factory.mktemp("config") / "run_config.json"
    path.write_text(json.dumps(config.model_dump(mode="json")))
    return path


@pytest.fixture(scope="module")
def two_nodes(
    run_config: Path, dataset: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """An uninterrupted two-node run with the PyTorchJob environment (no mirror)."""
    root = tmp_path_factory.mktemp("pytorchjob")
    codes = wait_all(start_nodes(root, run_config, dataset, pytorchjob_env))
    assert codes == [0, 0], logs(root)
    yield root


def test_multinode_two_nodes_equal_one_process_and_only_rank0_writes(
    two_nodes: Path, dataset: Path, tmp_path: Path
) -> None:
    node0, node1 = two_nodes / "node0" / "run", two_nodes / "node1" / "run"
    written = {p.name for p in node0.iterdir()}
    assert {"checkpoint.pth", "checkpoint_best_total.pth", "log.txt", "results.json"} <= written
    assert [p.name for p in node1.iterdir()] == []  # rank 1's node writes nothing
    # ... yet its `rfdetr train` reports the run as rank 0 read it (broadcast, not its own disk)
    assert '"epochs_completed": 2' in (two_nodes / "node1" / "node.log").read_text()
    assert "effective batch: 4 images per optimizer step" in logs(two_nodes)
    torch.set_num_threads(1)
    single = RunConfig.from_kwargs(
        "tiny", dataset_dir=str(dataset), output_dir=str(tmp_path / "one"), batch_size=4, **OPTIONS
    )
    one = weights(fit(single).output_dir)
    two = weights(node0)
    assert one.keys() == two.keys()
    for name, value in one.items():
        torch.testing.assert_close(two[name], value, rtol=0, atol=TOLERANCE, msg=name)


def test_multinode_node_lost_mid_epoch_resumes_from_the_mirror(
    two_nodes: Path, run_config: Path, dataset: Path, tmp_path: Path, bucket: str
) -> None:
    """Node 1 dies in epoch 1; the job's pods are deleted (SIGTERM, as the kubelet sends) and
    recreated with empty folders; both resume from epoch 0's checkpoint in the object-store
    mirror, which node 0 kept current."""
    mirror = f"s3://{bucket}/mirror/run/train"
    first = tmp_path / "first"
    procs = start_nodes(first, run_config, dataset, trainjob_env, mirror)
    log = first / "node0" / "run" / "log.txt"
    deadline = time.monotonic() + 120
    while not (log.is_file() and log.read_text().strip()):  # epoch 0 written: epoch 1 runs
        assert time.monotonic() < deadline and procs[0].poll() is None, logs(first)
        time.sleep(0.05)
    kill_node(procs[1])  # node 1 lost: its launcher and its worker
    try:
        procs[0].wait(timeout=15)  # its worker may see the lost peer and fail by itself
    except subprocess.TimeoutExpired:
        procs[0].send_signal(signal.SIGTERM)  # else the pod is deleted: SIGTERM to PID 1
    assert wait_all(procs, timeout=60)[0] != 0, logs(first)
    first_log = log.read_text().splitlines()
    assert len(first_log) == 1, "the kill came after epoch 1 ended; nothing left to resume"

    again = tmp_path / "again"
    codes = wait_all(start_nodes(again, run_config, dataset, trainjob_env, mirror))
    assert codes == [0, 0], logs(again)
    run = again / "node0" / "run"
    resumed_log = (run / "log.txt").read_text().splitlines()
    assert resumed_log[0] == first_log[0]  # epoch 0 restored from the mirror, not trained again
    assert [json.loads(line)["epoch"] for line in resumed_log] == [0, 1]
    expected, got = weights(two_nodes / "node0" / "run"), weights(run)
    for name, value in expected.items():  # a resumed run continues exactly
        torch.testing.assert_close(got[name], value, rtol=0, atol=1e-6, msg=name)
