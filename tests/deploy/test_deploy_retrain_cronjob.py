"""The retrain CronJob's own script, run here as the pod would run it, against a KFP stand-in.

Each overlay's rendered CronJob is executed with the environment its pod would get (values and
ConfigMap references resolved from the same rendered overlay), its volume mounts mapped to
temporary folders and the KFP endpoint pointed at the stand-in (tests/kfp_standin.py). The
pipeline it uploads must reach the object store the overlay's kfp-launcher names.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from deploy_helpers import cronjob_and_configmaps, profile_policy_allows, run_cronjob
from kfp_standin import serve

OVERLAYS = ("overlays/dev", "overlays/prod")


def _executor_env(pipeline_yaml: bytes) -> list[dict[str, str]]:
    spec = next(d for d in yaml.safe_load_all(pipeline_yaml) if "deploymentSpec" in d)
    executors = spec["deploymentSpec"]["executors"].values()
    return [{e["name"]: e["value"] for e in x["container"].get("env", [])} for x in executors]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deploy_retrain_cronjob_compiles_for_the_overlay_store_and_submits(
    rendered_docs: list[tuple[str, dict]], tmp_path: Path, overlay: str
) -> None:
    with serve() as kfp:
        kfp.multi_user = True
        for _tick in range(2):  # two ticks of the schedule
            result = run_cronjob(rendered_docs, overlay, kfp.url, tmp_path / f"tick{_tick}")
            assert result.returncode == 0, result.stderr[-2000:]
    cronjob, configmaps = cronjob_and_configmaps(rendered_docs, overlay)
    namespace = cronjob["metadata"]["namespace"]
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
    # The pods of the runs it submits: the CronJob's pull secret, a non-root user.
    platform = list(yaml.safe_load_all(kfp.uploads[0]))[1]["platforms"]["kubernetes"]
    pod_names = [
        s["name"]
        for s in cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["imagePullSecrets"]
    ]
    for config in platform["deploymentSpec"]["executors"].values():
        assert [s["secretName"] for s in config["imagePullSecret"]] == pod_names
        assert config["securityContext"]["runAsNonRoot"] is True
    run = kfp.runs[-1]
    params = yaml.safe_load(configmaps["rfdetr-retrain-params"]["params.yaml"])
    mirror = f"s3://mlpipeline/private-artifacts/{namespace}/rfdetr/checkpoint-mirror"
    assert run["runtime_config"]["parameters"] == {**params, "checkpoint_mirror_uri": mirror}
    assert profile_policy_allows(f"{mirror}/run-1/checkpoint.pth", namespace)
    assert run["display_name"] == "rfdetr weekly retrain"
    auth = {r.headers.get("authorization") for r in kfp.requests}
    assert auth == {"Bearer projected-sa-token"}
