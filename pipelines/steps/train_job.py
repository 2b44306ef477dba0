"""Multi-node training for the ``train`` step: a Kubeflow ``TrainJob`` (Trainer v2) or
``PyTorchJob`` (Training Operator v1) created, followed and awaited through
:mod:`pipelines.k8s_resources` (docs/deploy.md, section 8). Each node runs :func:`node_main`;
``torchrun`` reads ``PET_NNODES``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR``, ... set by the engine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from pipelines import k8s_resources as k8s
from pipelines._platform import Platform, train_job_settings
from pipelines.steps.common import StepError
from pipelines.steps.dataset import dataset_reference
from pipelines.steps.mirror import MIRRORED, CheckpointMirror, mirror_folder
from pipelines.steps.train import KEPT, TrainOutcome, keep_outputs, outcome_from_folder, work_folder
from rfdetr.config import RunConfig
from rfdetr.storage import download_file, upload_file
from rfdetr.storage.errors import ObjectNotFoundError

logger = logging.getLogger(__name__)

TRAINJOB = k8s.Kind("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob")
PYTORCHJOB = k8s.Kind("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob")
KINDS = {"trainjob": TRAINJOB, "pytorchjob": PYTORCHJOB}
# Condition types: Trainer v2 pkg/apis/trainer/v1alpha1/trainjob_types.go (Complete, Failed);
# Training Operator v1 pkg/apis/kubeflow.org/v1/common_types.go (Succeeded, Failed).
DONE = {"trainjob": "Complete", "pytorchjob": "Succeeded"}
# The first node's pod: JobSet labels (TrainJob) or the Training Operator's (PyTorchJob).
RANK0 = {
    "trainjob": "jobset.sigs.k8s.io/jobset-name={name},batch.kubernetes.io/job-completion-index=0",
    "pytorchjob": "training.kubeflow.org/job-name={name},training.kubeflow.org/replica-type=master",
}
ENV_CONFIG, ENV_DATASET, ENV_MIRROR = "RFDETR_RUN_CONFIG", "RFDETR_DATASET_REF", "RFDETR_MIRROR"
RESULTS = tuple(name for name in KEPT if name not in MIRRORED)  # results.json, run.yaml, plot
# The compiled defaults (the image is always compiled in), and how often to poll.
DEFAULTS: dict[str, Any] = {
    "image": "",
    **train_job_settings(Platform(), image=False),
    "poll_s": 15.0,
}


def job_name(run_id: str) -> str:
    """``rfdetr-<run id>-train``: an RFC 1035 label (TrainJob's rule), stable across retries."""
    base = re.sub(r"[^a-z0-9-]", "-", mirror_folder(run_id).lower()).strip("-")[:48]
    return f"rfdetr-{base}-train".replace("--", "-")


def runtime_ref(runtime: str) -> dict[str, str]:
    """``[TrainingRuntime/]NAME`` -> a TrainJob ``runtimeRef`` (a bare name: the cluster's
    ClusterTrainingRuntime, the Trainer's default kind)."""
    kind, _, name = runtime.rpartition("/")
    return {"name": name, "kind": kind} if kind else {"name": name}


def render_job(
    engine: str,
    name: str,
    *,
    nodes: int,
    gpus_per_node: int,
    settings: dict[str, Any],
    env: list[dict],
) -> dict[str, Any]:
    """The ``TrainJob`` or ``PyTorchJob`` of ``nodes`` x max(1, ``gpus_per_node``) processes."""
    kind, procs = KINDS[engine], max(1, gpus_per_node)
    process = {"image": settings["image"], "command": ["python", "-m", __name__], "env": env}
    resources = k8s.requirements(
        settings["cpu"], settings["memory"], settings["accelerator"], gpus_per_node
    )
    deadline = int(settings["timeout_s"])
    if engine == "trainjob":
        trainer = {**process, "numNodes": nodes, "numProcPerNode": procs}
        spec: dict[str, Any] = {
            "runtimeRef": runtime_ref(settings["runtime"]),
            "activeDeadlineSeconds": deadline,
            "trainer": {**trainer, "resourcesPerNode": resources},
        }
        return kind.manifest(name, spec)
    container = {
        "name": "pytorch",  # the name the Training Operator looks for
        **process,
        "resources": resources,
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    pod = {
        "containers": [container],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}],
    }
    if gpus_per_node > 0:
        pod["tolerations"] = [
            {"key": settings["accelerator"], "operator": "Exists", "effect": "NoSchedule"}
        ]
    replica = {"restartPolicy": "OnFailure", "template": {"spec": pod}}
    replicas = {"Master": {"replicas": 1, **replica}}
    if nodes > 1:
        replicas["Worker"] = {"replicas": nodes - 1, **replica}
    policy = {"cleanPodPolicy": "Running", "backoffLimit": 3, "activeDeadlineSeconds": deadline}
    spec = {"nprocPerNode": str(procs), "runPolicy": policy, "pytorchReplicaSpecs": replicas}
    return kind.manifest(name, spec)


def judge_job(engine: str) -> Any:
    """The :data:`~pipelines.k8s_resources.Judge` of a TrainJob or PyTorchJob."""

    def judge(obj: dict[str, Any]) -> k8s.Verdict | None:
        failed = k8s.condition(obj, "Failed")
        if failed is not None:
            return k8s.Verdict(True, k8s.reason_of(failed))
        return k8s.Verdict(False) if k8s.condition(obj, DONE[engine]) is not None else None

    return judge


def train_on_cluster(
    run_config: str | Path,
    dataset_dir: str | Path,
    output_dir: str | Path,
    *,
    engine: str,
    nodes: int,
    gpus_per_node: int,
    settings: dict[str, Any],
    mirror_root: str,
    run_id: str,
    resources: k8s.Resources | None = None,
) -> TrainOutcome:
    """Run training as an ``engine`` job of ``nodes`` nodes, wait for it, and take node 0's files
    from the mirror into the ``checkpoints`` artifact ``output_dir``.

    Raises:
        StepError: no mirror or no dataset reference (the nodes could not share files), no API
            access, the job failed (its reason), or it did not finish in ``timeout_s``.
    """
    settings = {**DEFAULTS, **settings}
    if engine not in KINDS or nodes < 1 or gpus_per_node < 0:
        raise StepError(
            f"train_engine {engine!r} with {nodes} node(s): expected one of "
            f"{', '.join(KINDS)} and at least 1 node"
        )
    reference = dataset_reference(dataset_dir)
    if reference is None or not mirror_root:
        raise StepError(
            "a multi-node train needs the dataset by reference (an s3:// dataset_uri) and a "
            "checkpoint_mirror_uri: the nodes fetch the data and return their files through them"
        )
    config = RunConfig.from_file(run_config)
    procs = max(1, gpus_per_node)
    batch = config.effective_batch_size(nodes * procs)
    logger.info("effective batch %d: %d node(s) x %d process(es)", batch, nodes, procs)
    mirror = CheckpointMirror.of_run(mirror_root, run_id)
    name = job_name(run_id)
    env = [
        {"name": ENV_CONFIG, "value": config.model_dump_json()},
        {"name": ENV_DATASET, "value": reference.to_json()},
        {"name": ENV_MIRROR, "value": str(mirror.uri)},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "HOME", "value": "/tmp"},  # writable whatever UID the cluster forces
        *k8s.object_store_env(settings["secret"]),
    ]
    body = render_job(
        engine, name, nodes=nodes, gpus_per_node=gpus_per_node, settings=settings, env=env
    )
    api = resources or k8s.Resources()
    selector = RANK0[engine].format(name=name)
    api.apply_and_wait(KINDS[engine], body, judge_job(engine), settings, log_selector=selector)
    work = work_folder(output_dir)
    _collect(mirror, work)
    outcome = outcome_from_folder(work, None)
    mirror.finish(work, sync=False)
    keep_outputs(work, Path(output_dir))
    if settings["delete"]:
        api.delete(KINDS[engine], name)
    return outcome


def _collect(mirror: CheckpointMirror, work: Path) -> None:
    """Download what node 0 left in the mirror (all but the resume point) into ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    for name in (*MIRRORED[:-1], *RESULTS):
        with contextlib.suppress(ObjectNotFoundError):  # no EMA file, no plot
            download_file(mirror.uri.child(name), work / name, store=mirror.store)


def hand_over(mirror: CheckpointMirror, work: Path) -> None:
    """Node 0, after training: the last mirror sync, and the result files the step keeps."""
    mirror.sync(work)
    for name in RESULTS:
        if (work / name).is_file():
            upload_file(work / name, mirror.uri.child(name), store=mirror.store)


def node_main() -> int:
    """One node of the job: fetch the data, restore the resume point, run ``torchrun``."""
    from pipelines.steps.dataset import REFERENCE_FILE
    from pipelines.steps.train import run_distributed, training

    rank = int(os.environ.get("PET_NODE_RANK", "0"))
    config = RunConfig.model_validate_json(os.environ[ENV_CONFIG])
    mirror = CheckpointMirror(os.environ[ENV_MIRROR])
    with tempfile.TemporaryDirectory() as tmp:
        scratch, work = Path(tmp), Path(tmp, "run")
        (scratch / "data").mkdir()
        (scratch / "data" / REFERENCE_FILE).write_text(os.environ[ENV_DATASET])
        work.mkdir()
        # every node loads the same resume point; node 0 alone writes, and mirrors
        with training(config, scratch / "data", work, scratch, mirror, rank == 0) as (config, _):
            run_distributed(config, 0, scratch, launcher=())
        if rank == 0:
            hand_over(mirror, work)
    logger.info("node %d finished", rank)
    return 0


if __name__ == "__main__":
    from pipelines.steps.common import step_errors

    with step_errors("train node"):
        sys.exit(node_main())
