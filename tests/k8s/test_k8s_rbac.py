"""Every Kubernetes API call of the pipeline's own steps is granted by the runner's Role
(manifests/pipeline-runner), and by nothing cluster-wide.

The calls are not listed by hand: the job-control flows run against the stand-in API server,
and each recorded REST request is mapped to (API group, resource[/subresource], verb) the way
kube-apiserver does (kubernetes/kubernetes@v1.32.0
``staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`` ``NewRequestInfo``: GET
of a name ``get``, of a collection ``list`` (``watch`` with ``?watch=true``), POST ``create``,
PATCH ``patch``, PUT ``update``, DELETE of a name ``delete``), then matched with Kubernetes'
RBAC rule matching (tests/conformance/test_conformance_rbac.py ``rule_allows``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml
from conftest import NAMESPACE
from kube_standin import KubeStandIn

from pipelines.k8s_resources import Resources
from pipelines.steps.train_job import KINDS, RANK0, job_name, judge_job

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "conformance"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
from deploy_helpers import render
from test_conformance_rbac import rule_allows

_PATH = re.compile(
    r"/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/[^/]+)/namespaces/(?P<ns>[^/]+)/"
    r"(?P<resource>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?"
)
VERBS = {"POST": "create", "PATCH": "patch", "PUT": "update"}
# Non-resource URLs every authenticated user may GET (the bootstrap ClusterRole
# system:public-info-viewer, kubernetes/kubernetes@v1.32.0 plugin/pkg/auth/authorizer/rbac/
# bootstrappolicy/policy.go); the client reads /version.
PUBLIC = {"/version", "/version/", "/healthz", "/livez", "/readyz"}


def request_info(method: str, path: str, query: dict[str, str]) -> tuple[str, str, str, str]:
    """(namespace, group, resource, verb) of a namespaced resource request."""
    match = _PATH.fullmatch(path)
    assert match, f"{method} {path}: not a namespaced resource request"
    resource = match["resource"] + (f"/{match['sub']}" if match["sub"] else "")
    if method == "GET":
        verb = "get" if match["name"] else ("watch" if query.get("watch") == "true" else "list")
    elif method == "DELETE":
        verb = "delete" if match["name"] else "deletecollection"
    else:
        verb = VERBS[method]
    return match["ns"], match["group"] or "", resource, verb


def job_flows(kube: KubeStandIn, api: Resources) -> None:
    """Create, re-attach, follow (with node 0's log), delete: each engine."""
    name = job_name("run-1")
    for engine, kind in KINDS.items():
        body = {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": {"name": name},
                "spec": {}}  # fmt: skip
        labels = dict(p.split("=") for p in RANK0[engine].format(name=name).split(","))
        kube.pods[f"{name}-{engine}-0"] = {"labels": labels, "log": "2026-12-04T00:00:00Z up\n"}
        done = "Complete" if engine == "trainjob" else "Succeeded"
        kube.statuses[(kind.plural, name)] = [{"conditions": [{"type": done, "status": "True"}]}]
        api.create_or_attach(kind, body)
        api.create_or_attach(kind, body)
        selector = RANK0[engine].format(name=name)
        api.wait(kind, name, judge_job(engine), timeout_s=5, poll_s=0.01, log_selector=selector)
        api.delete(kind, name)


def deploy_flows(kube: KubeStandIn, api: Resources) -> None:
    """Deploy a version, then a newer one beside it (create, wait, update, wait)."""
    from pipelines.steps.deploy import DEFAULTS, deploy_model

    ready = {"observedGeneration": 9, "conditions": [{"type": "Ready", "status": "True"}],
             "address": {"url": kube.url}}  # fmt: skip
    kube.statuses[("inferenceservices", "rfdetr-nano")] = [ready]
    settings = {**DEFAULTS, "image": "img", "poll_s": 0.01}
    deploy_model("s3://b/rfdetr-nano/v1/", settings=settings, resources=api)
    deploy_model("s3://b/rfdetr-nano/v2/", settings=settings, canary_percent=10, resources=api)


def _role() -> dict:
    docs = [d for d in yaml.safe_load_all(render("pipeline-runner")) if d]
    (role,) = [d for d in docs if d["kind"] == "Role"]
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert not [d for d in docs if d["kind"].startswith("Cluster")]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert {s["name"] for s in binding["subjects"]} == {"default-editor", "pipeline-runner"}
    return role


def test_k8s_every_job_and_deploy_call_is_granted_by_the_runner_role(kube, api) -> None:
    job_flows(kube, api)
    deploy_flows(kube, api)
    role = _role()
    calls = [c for c in kube.calls if not (c.method == "GET" and c.path in PUBLIC)]
    calls = [c for c in calls if not c.path.startswith("/v2/")]  # the model server, not the API
    required = {request_info(c.method, c.path, c.query) for c in calls}
    assert {(g, r, v) for _, g, r, v in required} >= {
        ("trainer.kubeflow.org", "trainjobs", "create"),
        ("kubeflow.org", "pytorchjobs", "delete"),
        ("", "pods/log", "get"),
        ("serving.kserve.io", "inferenceservices", "patch"),
    }
    problems = [
        f"{verb} {group}/{resource} in {ns}"
        for ns, group, resource, verb in sorted(required)
        if ns != NAMESPACE or not any(rule_allows(r, group, resource, verb) for r in role["rules"])
    ]
    assert problems == []


def test_k8s_rbac_mapping_refuses_an_ungranted_call() -> None:
    """The check has teeth: listing TrainJobs (``list``) or a PATCH is not granted."""
    role = _role()
    path = f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NAMESPACE}/trainjobs"
    for method, call in (("GET", path), ("PATCH", f"{path}/x")):
        _, group, resource, verb = request_info(method, call, {})
        assert not any(rule_allows(r, group, resource, verb) for r in role["rules"])
    assert request_info("GET", "/api/v1/namespaces/a/pods/p/log", {})[2:] == ("pods/log", "get")
