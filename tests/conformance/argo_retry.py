"""Argo's retry rule for a KFP task with a ``retryPolicy``, re-created in Python.

KFP 2.5+ compiles ``retryPolicy`` into an Argo ``retryStrategy`` on the executor pod's template
(kubeflow/pipelines@2.17.0 backend/src/v2/compiler/argocompiler/container.go l.626-646: ``limit``
= ``maxRetryCount``, ``backoff.duration``/``maxDuration`` = the IR's durations in seconds,
``backoff.factor`` an intstr; no ``retryPolicy`` field, so Argo's default ``OnFailure``). Argo
decides each retry in ``processNodeRetries`` (argoproj/argo-workflows
workflow/controller/operator.go, as stored)::

    maxDurationDeadline = firstChildNode.StartedAt.Add(maxDuration)
    if time.Now().After(maxDurationDeadline) { ... "Max duration limit exceeded" }
    timeToWait = baseDuration * factor^(len(childNodeIds)-1)      // factor: intstr.Int32
    waitingDeadline := lastChildNode.FinishedAt.Add(timeToWait)
    if !maxDurationDeadline.IsZero() && waitingDeadline.After(maxDurationDeadline) {
        ... "Backoff would exceed max duration limit" }
    if time.Now().Before(waitingDeadline) && len(childNodeIds) <= limit { requeue; wait }
    opts.executionDeadline = maxDurationDeadline    // the retried pod's deadline
    ...
    if len(childNodeIds) > limit { ... "No more retries left" }

Times here are seconds since the first attempt's start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DURATION = re.compile(r"^(\d+)s$")  # how the IR writes every duration (kfp/dsl/structures.py)


def _seconds(text: str) -> int:
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not an IR duration: {text!r}")
    return int(match.group(1))


@dataclass(frozen=True)
class RetryStrategy:
    """The Argo ``retryStrategy`` KFP makes from the IR's ``retryPolicy``."""

    limit: int
    duration_s: int
    factor: int
    max_duration_s: int

    @classmethod
    def from_ir(cls, policy: dict[str, object]) -> RetryStrategy:
        """From ``root.dag.tasks.<task>.retryPolicy``; the factor is truncated to an integer
        as KFP 2.5.0 does (``int32(...)``, container.go l.540) and Argo reads it (intstr)."""
        return cls(
            limit=int(policy["maxRetryCount"]),
            duration_s=_seconds(str(policy["backoffDuration"])),
            factor=int(float(policy["backoffFactor"])),
            max_duration_s=_seconds(str(policy["backoffMaxDuration"])),
        )


@dataclass(frozen=True)
class Decision:
    """Whether Argo starts another attempt; if so when, and the pod's deadline."""

    retry: bool
    message: str = ""
    start_s: float = 0.0
    deadline_s: float = 0.0


def process_node_retries(strategy: RetryStrategy, failed_at: list[float]) -> Decision:
    """Argo's decision after the attempts that failed at ``failed_at`` (the first attempt
    started at 0; the controller looks right after the last failure)."""
    window_end = float(strategy.max_duration_s)  # firstChildNode.StartedAt + maxDuration
    now = failed_at[-1]
    if now > window_end:
        return Decision(False, "Max duration limit exceeded")
    wait = strategy.duration_s * strategy.factor ** (len(failed_at) - 1)
    waiting_deadline = failed_at[-1] + wait
    if waiting_deadline > window_end:
        return Decision(False, "Backoff would exceed max duration limit")
    if len(failed_at) > strategy.limit:
        return Decision(False, "No more retries left")
    return Decision(True, start_s=waiting_deadline, deadline_s=window_end)


@dataclass(frozen=True)
class Outcome:
    succeeded: bool
    finished_s: float
    attempts: int
    message: str = ""


def simulate(
    strategy: RetryStrategy,
    work_s: float,
    crashes_at: list[float],
    timeout_s: float | None,
    resume_loss_s: float = 0.0,
) -> Outcome:
    """A step that needs ``work_s`` seconds of training in all, crashing at the absolute times
    ``crashes_at``; each retry resumes from the mirror, losing up to ``resume_loss_s`` (the
    mirror's sync interval). An attempt also ends at its deadline: ``timeout_s`` from its start
    (``activeDeadlineSeconds``) and, for a retry, Argo's window end."""
    done, start, failed_at = 0.0, 0.0, []
    deadline = start + timeout_s if timeout_s else float("inf")
    crashes = sorted(crashes_at)
    while True:
        finish = start + (work_s - done)
        crash = next((c for c in crashes if start < c < min(finish, deadline)), None)
        if crash is None and finish <= deadline:
            return Outcome(True, finish, len(failed_at) + 1)
        end = crash if crash is not None else deadline
        done = max(0.0, done + (end - start) - resume_loss_s)
        failed_at.append(end)
        decision = process_node_retries(strategy, failed_at)
        if not decision.retry:
            return Outcome(False, end, len(failed_at), decision.message)
        start = decision.start_s
        own = start + timeout_s if timeout_s else float("inf")
        deadline = min(own, decision.deadline_s)
