"""Where the deployment writes falls inside what multi-user KFP (>= 2.15, bundled SeaweedFS)
lets a profile namespace's keys write (the policy the pipelines profile controller creates;
see deploy_helpers.PROFILE_POLICY_RESOURCES for the source lines): the pipeline root of each
overlay's kfp-launcher, the resume mirror the CronJob and the release workflow pass."""

from __future__ import annotations

import yaml
from deploy_helpers import DEPLOY, profile_policy_allows, release_expressions, resolve_expressions


def test_deploy_policy_matcher_follows_the_controller_policy():
    assert profile_policy_allows(
        "s3://mlpipeline/private-artifacts/team-a/v2/artifacts/x", "team-a"
    )
    assert profile_policy_allows("minio://mlpipeline/shared/model/x", "team-a")
    assert not profile_policy_allows("s3://mlpipeline/private-artifacts/team-b/x", "team-a")
    assert not profile_policy_allows("s3://mlpipeline/rfdetr/checkpoint-mirror/x", "team-a")
    assert not profile_policy_allows("s3://mlpipeline/rfdetr-nano/latest.json", "team-a")


def test_deploy_kfp_launcher_roots_fall_inside_the_namespace_policy(rendered_docs):
    roots = 0
    for directory, doc in rendered_docs:
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "kfp-launcher":
            root = doc["data"]["defaultPipelineRoot"]
            namespace = doc["metadata"]["namespace"]
            # What the 2.15+ controller writes there: .../private-artifacts/<ns>/v2/artifacts
            assert root.endswith(f"mlpipeline/private-artifacts/{namespace}/v2/artifacts"), root
            assert profile_policy_allows(f"{root}/run/step/output", namespace), directory
            roots += 1
    assert roots == 2


def test_deploy_release_mirror_falls_inside_the_namespace_policy():
    release = yaml.safe_load(DEPLOY.read_text())["jobs"]["release"]
    for namespace in ("team-a", ""):
        table = release_expressions("http://127.0.0.1:9", smoke=True, namespace=namespace)
        mirror = resolve_expressions(release["env"]["MIRROR_URI"], table)
        assert profile_policy_allows(f"{mirror}/run-1/checkpoint.pth", namespace or "kubeflow")
