"""Authorization conformance: every KFP API call the submitters make is granted by the Role.

Multi-user KFP authorizes each API call with a SubjectAccessReview (group
``pipelines.kubeflow.org``, version ``v1beta1``, no subresource) in the namespace of the object
the call touches. The calls are not listed by hand: the submitters are run against the KFP
stand-in (tests/kfp_standin.py, reporting ``multi_user``) and every recorded REST request is
mapped to (namespace, resource, verb) the way KFP's API server does, then checked against the
rendered Role with Kubernetes' RBAC rule matching. The submitters: ``rfdetr-pipeline submit``
and ``schedule`` (pipelines/deploy.py, pipelines/kfp_api.py) in every mode they have, the
retrain CronJob's script (rendered from the overlay) and deploy.yml's release steps.

KFP sources re-created (kubeflow/pipelines@2.17.0 unless noted):

* resource and verb names: ``backend/src/apiserver/common/const.go`` l.19-20 (group, version),
  l.23-30 (resources), l.32-45 (verbs);
* recurring runs are ``jobs``: ``backend/src/apiserver/server/job_server.go`` createJob l.114,
  getJob l.157, listJobs l.192, disableJob l.270, deleteJob l.290, enableJob l.313; the namespace
  is the experiment's (``GetValidExperimentNamespacePair``) or the job's (``canAccessJob``
  l.452 ``Resource = common.RbacResourceTypeJobs``);
* pipelines and their versions are ``pipelines``: ``server/pipeline_server.go``
  ``canAccessPipeline`` l.1275-1313 (list pipelines in the query's namespace, list versions in
  the pipeline's), version create l.782-787; uploads ``server/pipeline_upload_server.go``
  ``canUploadVersionedPipeline`` (read at master 0029bf5; 2.17.0 l.151, l.331 are the upload
  handlers): create in the upload's namespace, a version in its pipeline's, and an empty
  namespace (a shared pipeline) in KFP's own namespace (``common.GetPodNamespace``);
* runs: ``server/run_server.go`` (create in the experiment's namespace; get and terminate via
  ``canAccessRun`` in the run's);
* experiments: ``server/experiment_server.go`` (create, list in the request's namespace);
* newer KFP (master after 2.17, ``server/run_server_test.go``
  ``TestCanAccessReferencedPipeline_Multiuser``) also checks ``get`` on the referenced
  pipeline (in its namespace) when a run or recurring run is created: modelled too.

RBAC rule matching: kubernetes/kubernetes@v1.32.0 ``pkg/apis/rbac/v1/evaluation_helpers.go``
(``VerbMatches``, ``APIGroupMatches``, ``ResourceMatches``: exact name or ``*``).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kfp_standin import API, KfpStandIn, Request, isolate_kfp_client, serve

from pipelines.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
from deploy_helpers import (
    release_expressions,
    release_workdir,
    render,
    run_cronjob,
    run_release_steps,
)

GROUP = "pipelines.kubeflow.org"
KFP_NAMESPACE = "kubeflow"  # where KFP's API server runs (GetPodNamespace)
KFP_RESOURCES = {"pipelines", "experiments", "runs", "jobs", "viewers", "visualizations",
                 "scheduledworkflows", "workflows"}  # fmt: skip
KFP_VERBS = {"create", "get", "list", "update", "delete", "archive", "unarchive", "retry",
             "terminate", "enable", "disable", "reportMetrics", "readArtifact"}  # fmt: skip
OVERLAYS = ("overlays/dev", "overlays/prod", "overlays/profile")

_ID = r"([^/:]+)"
# (method, path pattern, resource, verb, whose namespace: see _namespace)
ROUTES: list[tuple[str, re.Pattern[str], str, str, str]] = [
    ("GET", re.compile(rf"{API}/experiments"), "experiments", "list", "query"),
    ("POST", re.compile(rf"{API}/experiments"), "experiments", "create", "body"),
    ("GET", re.compile(rf"{API}/pipelines"), "pipelines", "list", "query"),
    ("POST", re.compile(rf"{API}/pipelines/upload"), "pipelines", "create", "upload"),
    ("POST", re.compile(rf"{API}/pipelines/upload_version"), "pipelines", "create", "pipelineid"),
    ("GET", re.compile(rf"{API}/pipelines/{_ID}/versions"), "pipelines", "list", "pipeline"),
    ("POST", re.compile(rf"{API}/runs"), "runs", "create", "body_experiment"),
    ("GET", re.compile(rf"{API}/runs/{_ID}"), "runs", "get", "run"),
    ("POST", re.compile(rf"{API}/runs/{_ID}:terminate"), "runs", "terminate", "run"),
    ("GET", re.compile(rf"{API}/recurringruns"), "jobs", "list", "query_experiment"),
    ("POST", re.compile(rf"{API}/recurringruns"), "jobs", "create", "body_experiment"),
    ("POST", re.compile(rf"{API}/recurringruns/{_ID}:disable"), "jobs", "disable", "job"),
    ("POST", re.compile(rf"{API}/recurringruns/{_ID}:enable"), "jobs", "enable", "job"),
    ("DELETE", re.compile(rf"{API}/recurringruns/{_ID}"), "jobs", "delete", "job"),
]
UNAUTHORIZED = {("GET", f"{API}/healthz")}  # the health server checks nothing


class _Objects:
    """Namespaces of the objects the stand-in created, as the API server would look them up."""

    def __init__(self, state: KfpStandIn) -> None:
        self.experiments = {e["experiment_id"]: e.get("namespace", "") for e in state.experiments}
        self.pipelines = {p["pipeline_id"]: p.get("namespace", "") for p in state.pipelines}
        self.runs = {r["run_id"]: self.experiments[r["experiment_id"]] for r in state.runs}
        self.jobs = {j["recurring_run_id"]: self.experiments.get(j["experiment_id"], "")
                     for j in state.recurring + state.deleted_recurring}  # fmt: skip


def _namespace(req: Request, whose: str, ids: tuple[str, ...], objects: _Objects) -> str:
    if whose == "query":
        return req.query.get("namespace", "")
    if whose == "body":
        return req.body.get("namespace", "")
    if whose == "upload":  # an empty namespace uploads a shared pipeline, checked in KFP's own
        return req.query.get("namespace", "") or KFP_NAMESPACE
    if whose == "pipelineid":
        return objects.pipelines[req.query["pipelineid"]] or KFP_NAMESPACE
    if whose == "pipeline":
        return objects.pipelines[ids[0]]
    if whose in ("body_experiment", "query_experiment"):
        source = req.body if whose == "body_experiment" else req.query
        return objects.experiments[source["experiment_id"]]
    if whose == "run":
        return objects.runs[ids[0]]
    return objects.jobs[ids[0]]


def required_access(state: KfpStandIn) -> Iterator[tuple[str, str, str, str]]:
    """(namespace, resource, verb, call) of every recorded request, as KFP authorizes it."""
    objects = _Objects(state)
    for req in state.requests:
        if (req.method, req.path) in UNAUTHORIZED:
            continue
        matches = [
            (resource, verb, whose, m.groups())
            for method, pattern, resource, verb, whose in ROUTES
            if method == req.method and (m := pattern.fullmatch(req.path))
        ]
        assert matches, f"{req.method} {req.path}: a KFP call this test cannot map; add its route"
        resource, verb, whose, ids = matches[-1]  # the most specific pattern is listed last
        call = f"{req.method} {req.path}"
        yield _namespace(req, whose, ids, objects), resource, verb, call
        if (resource, verb) in {("runs", "create"), ("jobs", "create")}:
            version = req.body["pipeline_version_reference"]["pipeline_id"]
            yield objects.pipelines[version] or KFP_NAMESPACE, "pipelines", "get", call


def rule_allows(rule: dict, group: str, resource: str, verb: str) -> bool:
    """Kubernetes' RuleAllows for a resource request without subresource or resource name."""
    return (
        any(g in ("*", group) for g in rule.get("apiGroups", []))
        and any(r in ("*", resource) for r in rule.get("resources", []))
        and any(v in ("*", verb) for v in rule.get("verbs", []))
        and not rule.get("resourceNames")
    )


def _role(docs: list[dict]) -> tuple[dict, str]:
    role = next(
        d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "rfdetr-submitter"
    )
    binding = next(
        d for d in docs if d["kind"] == "RoleBinding" and d["roleRef"]["name"] == "rfdetr-submitter"
    )
    cronjob = next(d for d in docs if d["kind"] == "CronJob")
    (subject,) = binding["subjects"]
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert subject["kind"] == "ServiceAccount" and subject["name"] == pod["serviceAccountName"]
    return role, role["metadata"]["namespace"]


@pytest.fixture(scope="module")
def rendered_docs() -> list[tuple[str, dict]]:
    return [(d, doc) for d in OVERLAYS for doc in yaml.safe_load_all(render(d)) if doc]


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compiled") / "pipeline.yaml"
    assert main(["compile", "--output", str(path)]) == 0
    return path


def _cli_flows(state: KfpStandIn, package: Path, namespace: str) -> None:
    """Every mode of submit and schedule, as an operator runs them in ``namespace``."""
    base = ["--host", state.url, "--namespace", namespace, "--param", "dataset_uri=s3://d/x"]
    submit = ["submit", str(package), *base]
    schedule = ["schedule", str(package), *base, "--cron", "0 0 3 * * 1", "--name", "weekly"]
    assert main([*submit, "--wait", "--poll", "0.01s"]) == 0  # new pipeline, a run, waits
    assert main([*submit, "--version-name", "v2"]) == 0  # a new version
    assert main([*submit, "--version-name", "v3", "--reuse-version"]) == 0  # found by content
    state.run_outcome = "RUNNING"
    waited = [*submit, "--reuse-version", "--wait", "--timeout", "0.05s", "--poll", "0.01s"]
    assert main([*waited, "--terminate-on-abort"]) == 1  # gives up and terminates the run
    state.run_outcome = "SUCCEEDED"
    assert main([*schedule, "--reuse-version"]) == 0
    assert main([*schedule, "--reuse-version", "--replace"]) == 0  # disables the old one
    assert main([*schedule, "--reuse-version", "--replace", "--delete-old"]) == 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_conformance_every_submitter_call_is_granted_by_the_role(
    rendered_docs: list[tuple[str, dict]],
    package: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    overlay: str,
) -> None:
    role, namespace = _role([doc for d, doc in rendered_docs if d == overlay])
    isolate_kfp_client(monkeypatch, tmp_path / "home")
    with serve() as state:
        state.multi_user = True
        _cli_flows(state, package, namespace)
        result = run_cronjob(rendered_docs, overlay, state.url, tmp_path / "cronjob")
        assert result.returncode == 0, result.stderr[-2000:]
        table = release_expressions(state.url, smoke=True, namespace=namespace)
        assert len(run_release_steps(release_workdir(tmp_path / "ci"), table)) == 3
        deleted = [r for r in state.requests if r.method == "DELETE"]
        required = set(required_access(state))
    assert deleted and any(r.path.endswith(":terminate") for r in state.requests)
    verbs = {(resource, verb) for _, resource, verb, _ in required}
    assert {("jobs", "create"), ("jobs", "disable"), ("pipelines", "create")} <= verbs
    problems = [
        f"{call}: needs {verb} on {resource} in namespace {ns!r}"
        for ns, resource, verb, call in sorted(required)
        if ns != namespace or not any(rule_allows(r, GROUP, resource, verb) for r in role["rules"])
    ]
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_conformance_role_uses_only_kfp_resource_and_verb_names(
    rendered_docs: list[tuple[str, dict]], overlay: str
) -> None:
    """A name KFP never checks (``recurringruns``, ``pipelines/versions``) grants nothing."""
    role, _ = _role([doc for d, doc in rendered_docs if d == overlay])
    for rule in role["rules"]:
        assert rule["apiGroups"] == [GROUP], rule
        assert set(rule["resources"]) <= KFP_RESOURCES, rule
        assert set(rule["verbs"]) <= KFP_VERBS, rule


def test_conformance_rule_matching_refuses_what_kfp_would_refuse() -> None:
    """The matcher itself: the old Role's names do not grant what KFP checks."""
    old = {"apiGroups": [GROUP], "resources": ["pipelines/versions", "recurringruns"],
           "verbs": ["get", "list", "create", "update", "enable", "disable"]}  # fmt: skip
    assert not rule_allows(old, GROUP, "jobs", "create")
    assert not rule_allows(old, GROUP, "pipelines", "create")
    assert rule_allows({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, GROUP, "jobs", "x")
    assert not rule_allows(
        {"apiGroups": [""], "resources": ["jobs"], "verbs": ["*"]}, GROUP, "jobs", "get"
    )
