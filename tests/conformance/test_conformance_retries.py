"""The compiled retry policy and deadlines against Argo's retry rule (:mod:`argo_retry`).

Argo counts ``backoff.maxDuration`` from the first attempt's start and makes it every retried
pod's deadline (argoproj/argo-workflows workflow/controller/operator.go ``processNodeRetries``;
shared/reference/kfp-backend-contract.md §1.5), so a window of one hour (the old 3600s) lets a
train step that fails after an hour never retry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from argo_retry import RetryStrategy, process_node_retries, simulate
from kfp.dsl import Artifact, Dataset, Metrics, Model

HOUR = 3600.0
USER_INPUT_CHECKS = ("resolve-config", "validate-dataset")  # bad config / bad dataset


def _strategy(spec: dict[str, Any]) -> RetryStrategy:
    return RetryStrategy.from_ir(spec["root"]["dag"]["tasks"]["train"]["retryPolicy"])


def _k8s(platform: dict[str, Any], task: str) -> dict[str, Any]:
    return platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].get(
        f"exec-{task}", {}
    )


def _deadline(platform: dict[str, Any], task: str) -> float | None:
    value = _k8s(platform, task).get("activeDeadlineSeconds")
    return float(value) if value is not None else None


def test_the_argo_model_reproduces_the_one_hour_window() -> None:
    """The model against the rule's consequences for ``120s / factor 2 / 3600s`` (reference
    §1.5): a failure at 20 min retries at 22 min and finishes; a retry started at 47 min is
    killed at the window's end (60 min); a failure after the window is never retried."""
    old = RetryStrategy(limit=2, duration_s=120, factor=2, max_duration_s=3600)
    early = simulate(old, work_s=50 * 60, crashes_at=[20 * 60], timeout_s=None)
    assert early.succeeded and early.attempts == 2
    assert early.finished_s == pytest.approx(52 * 60)
    late = simulate(old, work_s=(45 + 240) * 60, crashes_at=[45 * 60], timeout_s=None)
    assert not late.succeeded and late.finished_s == pytest.approx(60 * 60)
    assert process_node_retries(old, [45 * 60]).start_s == pytest.approx(47 * 60)
    never = process_node_retries(old, [180 * 60])
    assert not never.retry and never.message == "Max duration limit exceeded"


def test_compiled_train_retry_resumes_after_a_crash_at_20_hours(ir: tuple) -> None:
    """A 30-hour training whose pod dies at hour 20 is retried (after the first backoff) and
    finishes from the mirror; so does a 50-hour one that dies at hours 20 and 40."""
    spec, platform = ir
    strategy, timeout = _strategy(spec), _deadline(platform, "train")
    once = simulate(strategy, 30 * HOUR, [20 * HOUR], timeout, resume_loss_s=60)
    assert once.succeeded, once.message
    assert once.attempts == 2
    assert once.finished_s == pytest.approx(30 * HOUR + strategy.duration_s + 60)
    twice = simulate(strategy, 50 * HOUR, [20 * HOUR, 40 * HOUR], timeout, resume_loss_s=60)
    assert twice.succeeded and twice.attempts == 3, twice.message


def test_the_retry_window_covers_each_attempts_deadline(ir: tuple) -> None:
    """A first attempt that fails at any hour before its own deadline (less the first backoff)
    is still retried: the window is not shorter than the train deadline, and both are set."""
    spec, platform = ir
    strategy, timeout = _strategy(spec), _deadline(platform, "train")
    assert timeout is not None and _deadline(platform, "evaluate") is not None
    assert strategy.max_duration_s >= timeout
    assert (
        strategy.limit >= 1
        and float(
            spec["root"]["dag"]["tasks"]["train"]["retryPolicy"]["backoffFactor"]
        ).is_integer()
    )
    hour = HOUR
    while hour < timeout - strategy.duration_s:
        assert process_node_retries(strategy, [hour]).retry, f"no retry after {hour / HOUR} h"
        hour += 6 * HOUR


def _ancestors(tasks: dict[str, Any], name: str) -> set[str]:
    found: set[str] = set()
    todo = list(tasks[name].get("dependentTasks", []))
    while todo:
        parent = todo.pop()
        if parent not in found:
            found.add(parent)
            todo.extend(tasks[parent].get("dependentTasks", []))
    return found


def test_user_errors_fail_in_unretried_cpu_steps_before_any_gpu(ir: tuple) -> None:
    """Argo's ``OnFailure`` retries every non-zero exit, deterministic ones too, and the KFP SDK
    cannot narrow that; so the config and the dataset are checked in CPU steps without a retry
    policy, and every GPU step (and every retried one) runs after both."""
    spec, _ = ir
    tasks = spec["root"]["dag"]["tasks"]
    executors = spec["deploymentSpec"]["executors"]

    def gpu(task: str) -> bool:
        label = spec["components"][tasks[task]["componentRef"]["name"]]["executorLabel"]
        return "accelerator" in executors[label]["container"].get("resources", {})

    gpu_tasks = {t for t in tasks if gpu(t)}
    retried = {t for t, task in tasks.items() if "retryPolicy" in task}
    assert gpu_tasks and retried <= gpu_tasks
    for check in USER_INPUT_CHECKS:
        assert check in tasks and not gpu(check) and check not in retried
    for task in gpu_tasks | retried:
        assert set(USER_INPUT_CHECKS) <= _ancestors(tasks, task), task


def test_gpu_steps_need_no_node_labels(ir: tuple) -> None:
    """M3: GPU steps are placed by their GPU limit and the ``nvidia.com/gpu`` toleration; no
    default node selector (``nvidia.com/gpu.present`` is a GPU Feature Discovery label that the
    device plugin alone does not set, and a pod selecting it would stay Pending)."""
    spec, platform = ir
    for task in ("train", "evaluate"):
        container = spec["deploymentSpec"]["executors"][f"exec-{task}"]["container"]
        assert container["resources"]["accelerator"]["resourceCount"] == "1"
        assert "nodeSelector" not in _k8s(platform, task)
        assert {t["key"] for t in _k8s(platform, task)["tolerations"]} == {"nvidia.com/gpu"}


def test_every_train_attempt_uses_the_same_mirror(ir: tuple) -> None:
    """The driver runs once per task, not per attempt (reference §1.5): every attempt gets the
    same executor input, so the run id resolved from ``{{$.pipeline_job_uuid}}`` (2.17.0
    backend/src/v2/driver/resolve.go l.440) keys the same mirror folder, which a new pod
    resumes from (tests/pipeline/test_pipeline_components_model.py
    ``test_pipeline_train_mirror_lets_a_new_pod_resume``). The mirror is on by default."""
    spec, _ = ir
    train = spec["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"]
    assert train["run_id"] == {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}}
    source = train["checkpoint_mirror_uri"]["componentInputParameter"]
    assert spec["root"]["inputDefinitions"]["parameters"][source]["defaultValue"].startswith(
        "s3://"
    )


def test_train_refuses_a_run_id_left_as_a_placeholder(tmp_path: Path) -> None:
    """B2: a backend before 2.5 passes ``{{$.pipeline_job_uuid}}`` literally (reference §1.7);
    the train step stops with one line instead of sharing one mirror folder between runs."""
    from components import train

    outputs = {
        "checkpoints": Model(name="checkpoints", uri=str(tmp_path / "checkpoints")),
        "train_metrics": Metrics(name="train_metrics", uri=str(tmp_path / "metrics")),
    }
    with pytest.raises(SystemExit) as stopped:
        train.python_func(
            run_config=Artifact(name="run_config", uri=str(tmp_path / "run_config")),
            dataset=Dataset(name="dataset", uri=str(tmp_path / "dataset")),
            run_id="{{$.pipeline_job_uuid}}",
            **outputs,
        )
    message = str(stopped.value.code)
    assert message.startswith("train: error: run_id '{{$.pipeline_job_uuid}}'")
    assert "2.15" in message and "\n" not in message
    assert not (tmp_path / "checkpoints").exists()
