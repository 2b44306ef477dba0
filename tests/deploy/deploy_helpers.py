"""Helpers for the deployment checks: repo paths, external tools, kustomize rendering, pod specs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
KUBERNETES_VERSION = "1.32.0"  # the pinned API version the rendered manifests are validated against
RENDERED_DIRS = ("overlays/dev", "overlays/prod", "training")
# Custom resources kubernetes-validate has no schema for; checked structurally in the tests instead.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("kubeflow.org/v1", "PyTorchJob")}


def tool(name: str) -> str:
    """Path of a command-line tool, preferring this interpreter's venv; skips the test if absent."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install it: it belongs to the dev extra)")
    return found


def render(directory: str) -> str:
    """``kubectl kustomize manifests/<directory>`` output (skips when kubectl is missing)."""
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(MANIFESTS / directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kustomize {directory}: {result.stderr.strip()}"
    return result.stdout


def pod_specs(resource: dict) -> list[tuple[str, dict]]:
    """(label, pod spec) of every pod template in a workload or PyTorchJob."""
    kind, spec = resource["kind"], resource.get("spec", {})
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        return [(kind, spec["template"]["spec"])]
    if kind == "CronJob":
        return [(kind, spec["jobTemplate"]["spec"]["template"]["spec"])]
    if kind == "PyTorchJob":
        replicas = spec["pytorchReplicaSpecs"]
        return [(f"{kind}/{role}", r["template"]["spec"]) for role, r in replicas.items()]
    return []
