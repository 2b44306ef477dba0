"""Helpers for the deployment checks: repo paths, external tools, kustomize rendering, pod specs."""

from __future__ import annotations

import os
import re
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


def cronjob_and_configmaps(
    rendered_docs: list[tuple[str, dict]], overlay: str
) -> tuple[dict, dict[str, dict]]:
    docs = [doc for d, doc in rendered_docs if d == overlay]
    cronjob = next(doc for doc in docs if doc["kind"] == "CronJob")
    configmaps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    return cronjob, configmaps


def pod_environment(container: dict, configmaps: dict[str, dict], namespace: str) -> dict[str, str]:
    """The container's env as the kubelet resolves it (values, ConfigMap keys, downward API)."""
    env = {}
    for item in container["env"]:
        source = item.get("valueFrom", {})
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.namespace", item
            env[item["name"]] = namespace
        else:
            ref = source["configMapKeyRef"]
            env[item["name"]] = configmaps[ref["name"]][ref["key"]]  # KeyError: a dangling ref
    return env


def materialise_volumes(pod: dict, configmaps: dict[str, dict], root: Path) -> dict[str, Path]:
    """Mount path -> a local folder holding what the volume would hold."""
    container = pod["containers"][0]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {}
    for mount in container["volumeMounts"]:
        folder = root / mount["name"]
        folder.mkdir(parents=True)
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            for key, text in configmaps[volume["configMap"]["name"]].items():
                (folder / key).write_text(text)
        for source in volume.get("projected", {}).get("sources", []):
            token = source.get("serviceAccountToken")
            if token:
                (folder / token["path"]).write_text("projected-sa-token")
        mounts[mount["mountPath"]] = folder
    return mounts


def localise(text: str, mounts: dict[str, Path]) -> str:
    """``text`` with every mount path replaced by its local folder (one pass, longest first)."""
    paths = sorted(mounts, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(p) for p in paths))
    return pattern.sub(lambda m: str(mounts[m.group(0)]), text)


def run_cronjob(
    rendered_docs: list[tuple[str, dict]], overlay: str, kfp_url: str, root: Path
) -> subprocess.CompletedProcess[str]:
    """Run ``overlay``'s retrain CronJob script as its pod would, against the KFP at ``kfp_url``.

    The pod's environment comes from the same rendered overlay (values, ConfigMap keys, the
    downward-API namespace), its volumes are local folders, its token a dummy string.
    """
    cronjob, configmaps = cronjob_and_configmaps(rendered_docs, overlay)
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    mounts = materialise_volumes(pod, configmaps, root / "volumes")
    pod_env = pod_environment(container, configmaps, cronjob["metadata"]["namespace"])
    env = {k: localise(v, mounts) for k, v in pod_env.items()}
    command = [localise(part, mounts) for part in container["command"]]
    assert command[:2] == ["/bin/sh", "-c"]
    env |= {
        "KF_PIPELINES_ENDPOINT": kfp_url,
        "HOME": str(root / "home"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),  # this checkout, if set
    }
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
