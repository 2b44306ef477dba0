"""Deployment security: the namespace enforces the `restricted` Pod Security Standard and every
rendered pod meets it; only the namespace's pods, KFP's pipeline pods and Prometheus reach the
Pushgateway; compiled pipeline pods ask for a non-root user; images install hash-pinned files.

The `restricted` checks re-create Kubernetes' pod-security admission
(kubernetes/kubernetes@v1.32.0 staging/src/k8s.io/pod-security-admission/policy/):
check_privileged.go, check_hostNamespaces.go, check_hostPorts.go, check_hostPathVolumes.go,
check_restrictedVolumes.go (allowed volume types), check_allowPrivilegeEscalation.go (must be
false on every container), check_runAsNonRoot.go (pod or every container true, none false),
check_runAsUser.go (never 0), check_seccompProfile_restricted.go (RuntimeDefault or Localhost
on the pod or every container), check_capabilities_restricted.go (drop ALL, add at most
NET_BIND_SERVICE).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from deploy_helpers import ROOT, pod_specs

from pipelines._platform import IMAGE_UID
from pipelines.cli import main

ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                   "persistentVolumeClaim", "projected", "secret"}  # fmt: skip


def restricted_violations(pod: dict) -> list[str]:
    """What Kubernetes' `restricted` Pod Security level refuses in ``pod`` (a pod spec)."""
    problems = []
    context = pod.get("securityContext", {})
    containers = pod.get("containers", []) + pod.get("initContainers", [])
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            problems.append(f"{field}")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            problems.append(f"volume {volume['name']}: {sorted(kinds - ALLOWED_VOLUMES)}")
    if context.get("runAsUser") == 0:
        problems.append("pod runAsUser 0")
    pod_seccomp = context.get("seccompProfile", {}).get("type")
    for c in containers:
        sc, name = c.get("securityContext", {}), c["name"]
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            problems.append(f"{name}: hostPort")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation not false")
        non_root = sc.get("runAsNonRoot", context.get("runAsNonRoot"))
        if non_root is not True:
            problems.append(f"{name}: runAsNonRoot not true")
        if sc.get("runAsUser") == 0:
            problems.append(f"{name}: runAsUser 0")
        if sc.get("seccompProfile", {}).get("type", pod_seccomp) not in (
            "RuntimeDefault",
            "Localhost",
        ):
            problems.append(f"{name}: seccompProfile not RuntimeDefault/Localhost")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            problems.append(f"{name}: capabilities do not drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities {caps['add']}")
    return problems


def test_deploy_every_rendered_pod_meets_the_restricted_pod_security_standard(rendered_docs):
    checked = 0
    for directory, doc in rendered_docs:
        for label, pod in pod_specs(doc):
            checked += 1
            where = f"{directory} {label} {doc['metadata']['name']}"
            assert restricted_violations(pod) == [], where
    assert checked >= 5
    # The checker refuses what the admission controller refuses.
    _, pod = pod_specs(next(d for _, d in rendered_docs if d["kind"] == "CronJob"))[0]
    weak = yaml.safe_load(yaml.safe_dump(pod))
    weak["securityContext"].pop("seccompProfile")
    weak["containers"][0]["securityContext"]["capabilities"] = {"add": ["SYS_ADMIN"]}
    weak["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    assert len(restricted_violations(weak)) == 4


def test_deploy_namespace_enforces_restricted(rendered_docs):
    namespaces = [doc for _, doc in rendered_docs if doc["kind"] == "Namespace"]
    assert namespaces
    for namespace in namespaces:
        labels = namespace["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_deploy_only_the_namespace_kfp_runs_and_prometheus_reach_the_pushgateway(rendered_docs):
    for overlay in ("overlays/dev", "overlays/prod"):
        docs = [doc for d, doc in rendered_docs if d == overlay]
        (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
        deployment = next(d for d in docs if d["kind"] == "Deployment")
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = policy["spec"]["podSelector"]["matchLabels"]
        assert selector.items() <= pod_labels.items(), "the policy selects the Pushgateway"
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        (rule,) = policy["spec"]["ingress"]
        ports = {
            p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        }
        assert {p["port"] for p in rule["ports"]} <= ports
        peers = rule["from"]
        assert {"podSelector": {}} in peers  # this namespace
        others = [p for p in peers if "namespaceSelector" in p]
        names = {
            p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in others
        }
        assert names == {"kubeflow", "monitoring"}
        kubeflow = next(p for p in others if "podSelector" in p)  # only Argo workflow pods there
        assert (
            kubeflow["podSelector"]["matchExpressions"][0]["key"]
            == "workflows.argoproj.io/workflow"
        )
        assert not any("ipBlock" in p for p in peers)


def test_deploy_compiled_steps_run_as_non_root_and_pull_with_the_secret(tmp_path: Path):
    """kfp-kubernetes 2.17 can set runAsUser/runAsGroup/runAsNonRoot only (see docs/deploy.md);
    every compile sets them to the images' UID unless told otherwise (``--run-as-user none``).
    Why a 2.15/2.16 backend accepts the field: tests/conformance/test_conformance_ir.py."""
    from google.protobuf import json_format
    from kfp.kubernetes import kubernetes_executor_config_pb2 as pb

    def executors(*options: str) -> dict[str, dict]:
        out = tmp_path / "pipeline.yaml"
        assert main(["compile", "--output", str(out), *options]) == 0
        _, platform = yaml.safe_load_all(out.read_text())
        return platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]

    default = executors("--image-pull-secret", "regcred")
    assert len(default) == 8
    for name, config in default.items():
        json_format.ParseDict(config, pb.KubernetesExecutorConfig())  # strict: no unknown field
        context = config["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert int(context["runAsUser"]) == int(context["runAsGroup"]) == IMAGE_UID, name
        assert [s["secretName"] for s in config["imagePullSecret"]] == ["regcred"], name
    other = executors("--run-as-user", "4242")
    assert {int(c["securityContext"]["runAsUser"]) for c in other.values()} == {4242}
    plain = executors("--run-as-user", "none")
    assert not any("securityContext" in c or "imagePullSecret" in c for c in plain.values())
    for bad in ("0", "-5", "root"):
        assert main(["compile", "--output", str(tmp_path / "x.yaml"), "--run-as-user", bad]) == 2


def test_deploy_image_uid_is_the_images_user() -> None:
    """The UID every compile runs the steps as is the one the images are built with."""
    for kind in ("cpu", "gpu"):
        text = (ROOT / "containers" / f"Dockerfile.{kind}").read_text()
        assert f"USER {IMAGE_UID}:{IMAGE_UID}" in text.splitlines(), kind


def _locked(kind: str) -> dict[str, str]:
    """name -> the full requirement entry (with its --hash lines) of a lock file."""
    text = (ROOT / "containers" / f"requirements-{kind}.lock").read_text()
    entries = re.split(
        r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1] if text.startswith("#") else text
    )
    found = {}
    for entry in entries:
        match = re.match(r"([A-Za-z0-9_.\-]+)==(\S+)", entry)
        if match:
            found[match.group(1).lower().replace("_", "-")] = entry
    return found


@pytest.mark.parametrize("kind", ["cpu", "gpu"], ids=["cpu-lock", "gpu-image-lock"])
def test_deploy_images_install_every_dependency_hash_pinned(kind: str):
    from packaging.requirements import Requirement

    locked = _locked(kind)
    assert len(locked) > 20
    for name, entry in locked.items():
        assert "--hash=sha256:" in entry, f"{name} has no hash"
    assert "torch" not in locked and "torchvision" not in locked  # from the base / torch index
    pyproject = (ROOT / "pyproject.toml").read_text()
    extra = "onnx" if kind == "cpu" else "gpu"
    wanted = []
    for block in ("dependencies", "pipeline", extra):
        body = re.search(rf"^{block} = \[(.*?)\]", pyproject, re.MULTILINE | re.DOTALL).group(1)
        wanted += [Requirement(r) for r in re.findall(r'"([^"]+)"', body)]
    for requirement in wanted:
        if requirement.name in ("torch", "torchvision"):
            continue
        entry = locked[requirement.name.lower().replace("_", "-")]
        version = re.match(r"\S+==(\S+)", entry).group(1)
        assert requirement.specifier.contains(version, prereleases=True), (requirement, version)
    dockerfile = (ROOT / "containers" / f"Dockerfile.{kind}").read_text()
    assert f"--require-hashes --no-deps -r requirements-{kind}.lock" in dockerfile
    assert "--no-deps --no-build-isolation" in dockerfile  # the project resolves nothing
    assert "!containers/requirements-*.lock" in (ROOT / ".dockerignore").read_text()
