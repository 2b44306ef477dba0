"""The retrain CronJob's own script, run here as the pod would run it, against a KFP stand-in.

Each overlay's rendered CronJob is executed with the environment its pod would get (values and
ConfigMap references resolved from the same rendered overlay), its volume mounts mapped to
temporary folders and the KFP endpoint pointed at the stand-in (tests/kfp_standin.py). The
pipeline it uploads must reach the object store the overlay's kfp-launcher names.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
import yaml
from kfp_standin import serve

OVERLAYS = ("overlays/dev", "overlays/prod")


def _overlay(rendered_docs: list[tuple[str, dict]], overlay: str) -> tuple[dict, dict[str, dict]]:
    docs = [doc for d, doc in rendered_docs if d == overlay]
    cronjob = next(doc for doc in docs if doc["kind"] == "CronJob")
    configmaps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    return cronjob, configmaps


def _pod_environment(
    container: dict, configmaps: dict[str, dict], namespace: str
) -> dict[str, str]:
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


def _materialise_volumes(pod: dict, configmaps: dict[str, dict], root: Path) -> dict[str, Path]:
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


def _localise(text: str, mounts: dict[str, Path]) -> str:
    """``text`` with every mount path replaced by its local folder (one pass, longest first)."""
    paths = sorted(mounts, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(p) for p in paths))
    return pattern.sub(lambda m: str(mounts[m.group(0)]), text)


def _executor_env(pipeline_yaml: bytes) -> list[dict[str, str]]:
    spec = next(d for d in yaml.safe_load_all(pipeline_yaml) if "deploymentSpec" in d)
    executors = spec["deploymentSpec"]["executors"].values()
    return [{e["name"]: e["value"] for e in x["container"].get("env", [])} for x in executors]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_retrain_cronjob_compiles_for_the_overlay_store_and_submits(
    rendered_docs: list[tuple[str, dict]], tmp_path: Path, overlay: str
) -> None:
    import subprocess

    cronjob, configmaps = _overlay(rendered_docs, overlay)
    namespace = cronjob["metadata"]["namespace"]
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    mounts = _materialise_volumes(pod, configmaps, tmp_path / "volumes")
    pod_env = _pod_environment(container, configmaps, namespace)
    env = {k: _localise(v, mounts) for k, v in pod_env.items()}
    command = [_localise(part, mounts) for part in container["command"]]
    assert command[:2] == ["/bin/sh", "-c"]
    with serve() as kfp:
        kfp.multi_user = True
        env |= {
            "KF_PIPELINES_ENDPOINT": kfp.url,
            "HOME": str(tmp_path / "home"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),  # this checkout, if set
        }
        for _tick in range(2):  # two ticks of the schedule
            result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, result.stderr[-2000:]
    launcher = configmaps["kfp-launcher"]
    s3 = yaml.safe_load(launcher["providers"])["s3"]["default"]
    settings = configmaps["rfdetr-pipeline-settings"]
    assert s3["endpoint"] == f"{settings['store-host']}:{settings['store-port']}"
    assert s3["disableSSL"] == (settings["store-secure"] != "true")

    assert len(kfp.uploads) == 1, "the second tick reuses the version holding the same YAML"
    assert len(kfp.runs) == 2
    assert {run["pipeline_version_reference"]["pipeline_version_id"] for run in kfp.runs} == {
        kfp.versions[0]["pipeline_version_id"]
    }
    # Multi-user KFP: the experiment, the pipeline (so its versions) and hence the runs live in
    # the CronJob's own namespace, where the submitter Role is bound.
    assert {e["namespace"] for e in kfp.experiments} == {namespace}
    assert {p["namespace"] for p in kfp.pipelines} == {namespace}
    store_steps = [e for e in _executor_env(kfp.uploads[0]) if "OBJECTSTORECONFIG_HOST" in e]
    assert store_steps, "no step of the uploaded pipeline reads the object store"
    for step_env in store_steps:
        endpoint = f"{step_env['OBJECTSTORECONFIG_HOST']}:{step_env['OBJECTSTORECONFIG_PORT']}"
        assert endpoint == s3["endpoint"]
        assert step_env["OBJECTSTORECONFIG_SECURE"] == settings["store-secure"]
        assert step_env["PUSHGATEWAY_URL"] == settings["pushgateway-url"]
    run = kfp.runs[-1]
    params = yaml.safe_load(configmaps["rfdetr-retrain-params"]["params.yaml"])
    mirror = f"s3://mlpipeline/private-artifacts/{namespace}/rfdetr/checkpoint-mirror"
    assert run["runtime_config"]["parameters"] == {**params, "checkpoint_mirror_uri": mirror}
    assert run["display_name"] == "rfdetr weekly retrain"
    auth = {r.headers.get("authorization") for r in kfp.requests}
    assert auth == {"Bearer projected-sa-token"}
