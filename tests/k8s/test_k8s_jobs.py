"""Job control of the ``train`` step against a stand-in Kubernetes API server (HTTP level).

The real ``kubernetes`` client (from a kubeconfig) talks to tests/k8s/kube_standin.py, which
answers as kube-apiserver does: 201 on create, 409 ``AlreadyExists`` for a taken name, 404
``NotFound`` after delete. Condition types are Trainer v2's (``Complete``, ``Failed``:
kubeflow/trainer ``pkg/apis/trainer/v1alpha1/trainjob_types.go``) and the Training Operator's
(``Created``, ``Running``, ``Succeeded``, ``Failed``).
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import pytest
import torch
from conftest import NAMESPACE

from pipelines.k8s_resources import Verdict
from pipelines.steps.common import StepError
from pipelines.steps.train_job import (
    DEFAULTS,
    PYTORCHJOB,
    TRAINJOB,
    hand_over,
    job_name,
    judge_job,
    render_job,
    train_on_cluster,
)

RUN = "3f2b8a9e-1c4d-4e5f-9a7b-0c1d2e3f4a5b"


def _job(engine: str = "trainjob", nodes: int = 2) -> dict:
    settings = {**DEFAULTS, "image": "ghcr.io/rfdetr-pipelines/rfdetr:1.0.0"}
    env = [{"name": "X", "value": "1"}]
    return render_job(
        engine, job_name(RUN), nodes=nodes, gpus_per_node=8, settings=settings, env=env
    )


def _cond(kind: str, reason: str = "", message: str = "") -> dict:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-12-04T12:00:00Z",
    }


def test_k8s_create_then_a_retry_attaches_to_the_same_job(kube, api) -> None:
    first = api.create_or_attach(TRAINJOB, _job())
    again = api.create_or_attach(TRAINJOB, _job())  # the retried step
    assert first["metadata"]["uid"] == again["metadata"]["uid"]
    posts = [c for c in kube.calls if c.method == "POST"]
    assert len(posts) == 2 and len(kube.objects) == 1
    assert [c.method for c in kube.calls] == ["POST", "POST", "GET"]  # 201, 409, attach
    assert (
        kube.calls[0].path
        == f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NAMESPACE}/trainjobs"
    )


def test_k8s_wait_follows_conditions_until_complete(kube, api, caplog) -> None:
    name = job_name(RUN)
    api.create_or_attach(TRAINJOB, _job())
    kube.statuses[("trainjobs", name)] = [
        {},
        {"conditions": [{**_cond("Suspended", "Resumed"), "status": "False"}]},
        {
            "conditions": [
                {**_cond("Suspended", "Resumed"), "status": "False"},
                _cond("Complete", "JobSetCompleted", "jobset completed"),
            ]
        },
    ]
    with caplog.at_level(logging.INFO, logger="pipelines.k8s_resources"):
        obj = api.wait(TRAINJOB, name, judge_job("trainjob"), timeout_s=5, poll_s=0.01)
    assert obj["status"]["conditions"][-1]["type"] == "Complete"
    assert kube.methods("trainjobs").count("GET") == 3
    logged = [r.getMessage() for r in caplog.records]
    assert any("Suspended=False" in m for m in logged)
    assert sum("Complete=True JobSetCompleted: jobset completed" in m for m in logged) == 1


def test_k8s_a_failed_job_is_one_line_with_its_reason(kube, api) -> None:
    name = job_name(RUN)
    api.create_or_attach(PYTORCHJOB, _job("pytorchjob"))
    message = "PyTorchJob rfdetr-x is failed because 1 Master replica(s) failed.\nexit 1"
    kube.statuses[("pytorchjobs", name)] = [
        {
            "conditions": [
                _cond("Created", "PyTorchJobCreated"),
                _cond("Running", "PyTorchJobRunning"),
            ]
        },
        {"conditions": [_cond("Created"), _cond("Failed", "PyTorchJobFailed", message)]},
    ]
    with pytest.raises(StepError) as info:
        api.wait(PYTORCHJOB, name, judge_job("pytorchjob"), timeout_s=5, poll_s=0.01)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"PyTorchJob {name} failed: PyTorchJobFailed: PyTorchJob rfdetr-x")


def test_k8s_wait_times_out_with_the_last_condition(kube, api) -> None:
    name = job_name(RUN)
    api.create_or_attach(TRAINJOB, _job())
    kube.statuses[("trainjobs", name)] = [
        {"conditions": [{**_cond("Suspended"), "status": "False"}]}
    ]
    with pytest.raises(
        StepError, match=r"not finished after 0.05s \(last condition: Suspended=False"
    ):
        api.wait(TRAINJOB, name, judge_job("trainjob"), timeout_s=0.05, poll_s=0.01)


def test_k8s_delete_then_404(kube, api) -> None:
    name = job_name(RUN)
    api.create_or_attach(TRAINJOB, _job())
    assert api.delete(TRAINJOB, name) is True
    assert api.get(TRAINJOB, name) is None
    assert api.delete(TRAINJOB, name) is False  # 404: already gone
    with pytest.raises(StepError, match="was deleted while the step waited"):
        api.wait(TRAINJOB, name, lambda o: None, timeout_s=1, poll_s=0.01)
    assert kube.calls[1].query == {"propagationPolicy": "Background"} or kube.calls[1].body


def test_k8s_rank0_log_is_copied_and_a_denied_log_is_skipped(kube, api, caplog) -> None:
    name = job_name(RUN)
    labels = {
        "jobset.sigs.k8s.io/jobset-name": name,
        "batch.kubernetes.io/job-completion-index": "0",
    }
    kube.pods[f"{name}-node-0-0-abcde"] = {
        "labels": labels,
        "log": "2026-12-04T12:00:01Z epoch 0 loss 3.1\n2026-12-04T12:00:02Z epoch 1 loss 2.9\n",
    }
    api.create_or_attach(TRAINJOB, _job())
    kube.statuses[("trainjobs", name)] = [{}, {"conditions": [_cond("Complete")]}]
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    with caplog.at_level(logging.INFO, logger="pipelines.k8s_resources"):
        api.wait(
            TRAINJOB, name, judge_job("trainjob"), timeout_s=5, poll_s=0.01, log_selector=selector
        )
    copied = [r.getMessage() for r in caplog.records if "loss" in r.getMessage()]
    assert len(copied) == 2 and copied[1].endswith("epoch 1 loss 2.9")  # each line once
    kube.logs_forbidden = True
    kube.statuses[("trainjobs", name)] = [{}, {"conditions": [_cond("Complete")]}]
    api.wait(TRAINJOB, name, judge_job("trainjob"), timeout_s=5, poll_s=0.01, log_selector=selector)
    assert api._logs_denied


def test_k8s_judges_follow_each_engine_s_condition_types() -> None:
    trainjob, pytorchjob = judge_job("trainjob"), judge_job("pytorchjob")
    assert trainjob({"status": {"conditions": [_cond("Complete")]}}) == Verdict(False)
    assert trainjob({"status": {"conditions": [_cond("Succeeded")]}}) is None  # not TrainJob's
    assert pytorchjob({"status": {"conditions": [_cond("Succeeded")]}}) == Verdict(False)
    failed = pytorchjob({"status": {"conditions": [_cond("Failed", "BackoffLimitExceeded")]}})
    assert failed == Verdict(True, "BackoffLimitExceeded")


def _node_outputs(work: Path) -> None:
    """What node 0 of a finished job leaves in the run folder (written as training would)."""
    state = {
        "model": {"class_embed.bias": torch.zeros(3)},  # 2 classes + no-object
        "class_names": ["a", "b"],
        "metrics": {"map_50_95": 0.42, "epoch": 1},
    }
    for name in ("checkpoint_best_total.pth", "checkpoint_best_regular.pth", "checkpoint.pth"):
        torch.save(state, work / name)
    (work / "log.txt").write_text(
        json.dumps({"epoch": 0, "train_loss": 3.0})
        + "\n"
        + json.dumps({"epoch": 1, "train_loss": 2.5})
        + "\n"
    )
    results = {"stopped_early": False, "class_names": ["a", "b"]}
    (work / "results.json").write_text(json.dumps(results))


@pytest.mark.parametrize("engine", ["trainjob", "pytorchjob"])
def test_k8s_train_on_cluster_creates_waits_collects_and_deletes(
    kube, api, bucket: str, tmp_path: Path, engine: str
) -> None:
    from pipelines.steps.config import write_run_config
    from pipelines.steps.dataset import REFERENCE_FILE
    from pipelines.steps.mirror import CheckpointMirror
    from rfdetr.storage.reference import PrefixReference

    config = tmp_path / "run_config"
    write_run_config(config, {"dataset_uri": "s3://data/set", "model_size": "tiny"})
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    ref = PrefixReference("s3://data/set", "ab" * 32, 3, 100)
    (dataset / REFERENCE_FILE).write_text(ref.to_json())
    mirror_root = f"s3://{bucket}/mirror"
    node = tmp_path / "node"
    node.mkdir()
    _node_outputs(node)
    hand_over(CheckpointMirror(f"{mirror_root}/{RUN}/train"), node)  # what node 0 does last
    done = "Complete" if engine == "trainjob" else "Succeeded"
    plural = f"{engine}s"
    kube.statuses[(plural, job_name(RUN))] = [{}, {"conditions": [_cond(done)]}]
    out = tmp_path / "checkpoints"
    outcome = train_on_cluster(
        config,
        dataset,
        out,
        engine=engine,
        nodes=2,
        gpus_per_node=0,
        settings={"image": "img:1", "poll_s": 0.01},
        mirror_root=mirror_root,
        run_id=RUN,
        resources=api,
    )
    assert outcome.class_names == ["a", "b"] and outcome.epochs_completed == 2
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint_best_regular.pth",
        "log.txt",
        "results.json",
    ]
    created = next(c.body for c in kube.calls if c.method == "POST")
    env = json.dumps(created)
    assert '"RFDETR_DATASET_REF"' in env and ref.manifest_sha256 in env
    assert kube.methods(plural)[-1] == "DELETE" and not kube.objects
    from rfdetr.storage import ObjectStore

    left = [
        o.object_name for o in ObjectStore.from_env().client.list_objects(bucket, recursive=True)
    ]
    assert left == [f"mirror/{RUN}/train/checkpoint.pth"]  # the resume point stays, as single-pod


def test_k8s_train_on_cluster_refuses_a_copied_dataset(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(StepError, match="needs the dataset by reference"):
        train_on_cluster(
            tmp_path / "c",
            tmp_path / "d",
            tmp_path / "o",
            engine="trainjob",
            nodes=2,
            gpus_per_node=1,
            settings={},
            mirror_root="s3://b/m",
            run_id=RUN,
        )


def test_k8s_job_names_are_stable_rfc1035_labels() -> None:
    name = job_name(RUN)
    assert name == job_name(RUN) and len(name) <= 63 and name[0].isalpha()
    assert job_name(str(uuid.uuid4())) != name
