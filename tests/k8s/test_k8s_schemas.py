"""The custom resources the pipeline creates validate strictly against their schemas.

* ``TrainJob``: the vendored CRD (tests/k8s/vendor, SOURCE.md), mapped to JSON Schema as
  tests/k8s/crd_schema.py describes (unknown fields are errors, CEL name rules enforced).
* ``PyTorchJob``: the vendored Training Operator v1 CRD, mapped the same way; its pod templates
  also as core ``PodTemplate`` objects with kubernetes-validate --strict (Kubernetes 1.32), and
  the operator's contract (``nprocPerNode`` a string, container ``pytorch``,
  shared/reference §1.16).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from crd_schema import validate

from pipelines.steps.train_job import DEFAULTS, job_name, render_job, runtime_ref

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
from deploy_helpers import render

TRAINJOB_CRD = "trainer.kubeflow.org_trainjobs.pruned.yaml"
PYTORCHJOB_CRD = "kubeflow.org_pytorchjobs.pruned.yaml"
RUN = "3f2b8a9e-1c4d-4e5f-9a7b-0c1d2e3f4a5b"
ENV = [
    {"name": "RFDETR_RUN_CONFIG", "value": "{}"},
    {
        "name": "AWS_ACCESS_KEY_ID",
        "valueFrom": {"secretKeyRef": {"name": "mlpipeline-minio-artifact", "key": "accesskey"}},
    },
]


def _render(engine: str, nodes: int = 2, gpus: int = 8) -> dict:
    settings = {**DEFAULTS, "image": "ghcr.io/rfdetr-pipelines/rfdetr:1.0.0"}
    return render_job(
        engine, job_name(RUN), nodes=nodes, gpus_per_node=gpus, settings=settings, env=ENV
    )


@pytest.mark.parametrize(("nodes", "gpus"), [(2, 8), (4, 1), (1, 0)])
def test_k8s_trainjob_validates_against_the_trainer_crd(nodes: int, gpus: int) -> None:
    job = _render("trainjob", nodes, gpus)
    validate(job, TRAINJOB_CRD, "v1alpha1")
    trainer = job["spec"]["trainer"]
    assert job["spec"]["runtimeRef"] == {
        "name": "rfdetr-torch-distributed",
        "kind": "TrainingRuntime",
    }
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (nodes, max(1, gpus))
    assert ("nvidia.com/gpu" in trainer["resourcesPerNode"]["limits"]) == (gpus > 0)


def test_k8s_the_trainjob_check_rejects_what_the_api_server_would() -> None:
    job = _render("trainjob")
    misspelt = copy.deepcopy(job)
    misspelt["spec"]["trainer"]["numProcsPerNode"] = 8
    with pytest.raises(jsonschema.ValidationError, match="numProcsPerNode"):
        validate(misspelt, TRAINJOB_CRD, "v1alpha1")
    bad_quantity = copy.deepcopy(job)
    bad_quantity["spec"]["trainer"]["resourcesPerNode"]["limits"]["memory"] = "32 GB"
    with pytest.raises(jsonschema.ValidationError):
        validate(bad_quantity, TRAINJOB_CRD, "v1alpha1")
    long_name = copy.deepcopy(job)
    long_name["metadata"]["name"] = "rfdetr-" + "x" * 60
    with pytest.raises(AssertionError, match="CEL rule"):
        validate(long_name, TRAINJOB_CRD, "v1alpha1")


@pytest.mark.parametrize("nodes", [1, 3])
def test_k8s_pytorchjob_validates_against_the_training_operator_crd(nodes: int) -> None:
    job = _render("pytorchjob", nodes)
    validate(job, PYTORCHJOB_CRD, "v1")
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev extra)")
    spec = job["spec"]
    replicas = spec["pytorchReplicaSpecs"]
    assert spec["nprocPerNode"] == "8" and isinstance(spec["nprocPerNode"], str)
    assert replicas["Master"]["replicas"] == 1
    assert replicas.get("Worker", {}).get("replicas", 0) == nodes - 1
    for role, replica in replicas.items():
        assert set(replica) == {"replicas", "restartPolicy", "template"}
        container = replica["template"]["spec"]["containers"][0]
        assert container["name"] == "pytorch"
        template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": f"{job['metadata']['name']}-{role.lower()}"},
            "template": replica["template"],
        }
        kv.validate(template, "1.32.0", strict=True)


def test_k8s_the_pytorchjob_check_rejects_a_misspelt_field() -> None:
    job = _render("pytorchjob")
    job["spec"]["pytorchReplicaSpecs"]["Worker"]["restartPolicies"] = "OnFailure"
    with pytest.raises(jsonschema.ValidationError, match="restartPolicies"):
        validate(job, PYTORCHJOB_CRD, "v1")


def test_k8s_a_cluster_runtime_is_referenced_by_name_only() -> None:
    settings = {**DEFAULTS, "image": "img:1", "runtime": "torch-distributed"}
    job = render_job(
        "trainjob", "rfdetr-x-train", nodes=2, gpus_per_node=1, settings=settings, env=ENV
    )
    validate(job, TRAINJOB_CRD, "v1alpha1")
    assert job["spec"]["runtimeRef"] == {"name": "torch-distributed"}  # ClusterTrainingRuntime


def test_k8s_the_shipped_training_runtime_validates_and_fits_the_trainjob() -> None:
    """manifests/pipeline-runner's TrainingRuntime: the pruned CRD, its Job template as a strict
    batch/v1 Job, and what the Trainer's torch plugin looks for (kubeflow/trainer
    manifests/base/runtimes/torch_distributed.yaml: ancestor label ``trainer``, container
    ``node``), plus the settings the train nodes need (/dev/shm, GPU toleration)."""
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev extra)")
    docs = [d for d in yaml.safe_load_all(render("pipeline-runner")) if d]
    (runtime,) = [d for d in docs if d["kind"] == "TrainingRuntime"]
    validate(runtime, "trainer.kubeflow.org_trainingruntimes.pruned.yaml", "v1alpha1")
    assert runtime_ref(DEFAULTS["runtime"]) == {
        "name": runtime["metadata"]["name"],
        "kind": "TrainingRuntime",
    }
    assert "torch" in runtime["spec"]["mlPolicy"]
    (node,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    template = node["template"]
    assert (
        template["metadata"]["labels"]["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"
    )
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "node"}, **template}
    job["metadata"] = {"name": "node", **template["metadata"]}
    kv.validate(job, "1.32.0", strict=True)
    pod = template["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "node"
    shm = {v["name"]: v for v in pod["volumes"]}["dshm"]
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert any(t["key"] == DEFAULTS["accelerator"] for t in pod["tolerations"])
    broken = copy.deepcopy(runtime)
    broken["spec"]["mlPolicy"]["torch"]["numProcPerNode"] = "all"
    with pytest.raises(AssertionError, match="CEL rule"):
        validate(broken, "trainer.kubeflow.org_trainingruntimes.pruned.yaml", "v1alpha1")
