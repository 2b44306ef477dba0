"""Kustomize overlays render; the output passes kubernetes-validate --strict and yamllint; pods
have requests/limits, run as non-root, GPU pods tolerate GPU taints; no real secrets committed."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from deploy_helpers import CRD_KINDS, KUBERNETES_VERSION, MANIFESTS, ROOT, pod_specs, tool


def _kv():
    """The kubernetes_validate module (only the schema tests skip without it)."""
    return pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (dev extra)"
    )


def _validate(resource: dict) -> None:
    _kv().validate(resource, KUBERNETES_VERSION, strict=True)


def test_deploy_every_overlay_renders_the_expected_kinds(rendered_docs):
    kinds = {(d, doc["kind"]) for d, doc in rendered_docs}
    for overlay in ("overlays/dev", "overlays/prod"):
        for kind in (
            "Namespace",
            "ConfigMap",
            "Deployment",
            "Service",
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "CronJob",
            "NetworkPolicy",
        ):
            assert (overlay, kind) in kinds, f"{overlay} renders no {kind}"
    assert ("overlays/prod", "ServiceMonitor") in kinds
    # The pipeline's own RBAC and TrainJob runtime (their content: tests/k8s).
    assert {"Role", "RoleBinding", "TrainingRuntime"} <= {
        k for d, k in kinds if d == "pipeline-runner"
    }
    # A Profile's namespace: the profile controller owns the Namespace and its kfp-launcher.
    profile = [doc for d, doc in rendered_docs if d == "overlays/profile"]
    assert {d["kind"] for d in profile} >= {"CronJob", "Role", "Deployment", "NetworkPolicy"}
    assert not [d for d in profile if d["kind"] == "Namespace"]
    assert not [d for d in profile if d["metadata"]["name"] == "kfp-launcher"]
    assert not any(k == "PersistentVolumeClaim" for d, k in kinds if d.startswith("overlays"))
    for overlay, namespace in (("overlays/dev", "rfdetr-dev"), ("overlays/prod", "rfdetr")):
        docs = [doc for d, doc in rendered_docs if d == overlay]
        assert {doc["metadata"].get("namespace") for doc in docs} == {None, namespace}
        assert [doc["metadata"]["name"] for doc in docs if doc["kind"] == "Namespace"] == [
            namespace
        ]


def test_deploy_builtin_kinds_pass_strict_validation(rendered_docs):
    checked = 0
    for directory, doc in rendered_docs:
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue
        try:
            _validate(doc)
        except _kv().SchemaNotFoundError:
            pytest.fail(
                f"{directory}: {doc['kind']} has no schema; add it to CRD_KINDS with checks"
            )
        checked += 1
    assert checked >= 20


def test_deploy_service_monitor_honours_labels_and_selects_the_pushgateway(rendered_docs):
    monitors = [doc for _, doc in rendered_docs if doc["kind"] == "ServiceMonitor"]
    services = {
        doc["metadata"]["name"]: doc for _, doc in rendered_docs if doc["kind"] == "Service"
    }
    assert monitors
    for monitor in monitors:
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert all(e["honorLabels"] is True for e in monitor["spec"]["endpoints"])
        service = services["pushgateway"]
        assert selector.items() <= service["metadata"]["labels"].items()
        ports = {p["name"] for p in service["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports


def test_deploy_a_broken_manifest_is_caught(tmp_path: Path):
    broken = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "broken"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {
                    "containers": [{"name": "c", "image": "x:1", "imagePullPolicey": "Always"}]
                },
            },
        },
    }
    with pytest.raises(_kv().ValidationError, match="imagePullPolicey"):
        _validate(broken)
    broken["spec"]["template"]["spec"]["containers"][0] = {
        "name": "c",
        "image": "x:1",
        "ports": [{"containerPort": "http"}],
    }
    with pytest.raises(_kv().ValidationError, match="http"):
        _validate(broken)
    # And through kustomize: a base whose resource is not valid YAML fails to render.
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - bad.yaml\n")
    (tmp_path / "bad.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: [oops\n")
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0


def test_deploy_rendered_output_and_sources_pass_yamllint(rendered, tmp_path: Path):
    yamllint = tool("yamllint")
    files = []
    for directory, text in rendered.items():
        path = tmp_path / (directory.replace("/", "-") + ".yaml")
        path.write_text(text)
        files.append(str(path))
    result = subprocess.run(
        [yamllint, "--strict", "-c", str(ROOT / ".yamllint.yaml"), *files, str(MANIFESTS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\na: 2\n")
    result = subprocess.run(
        [yamllint, "-c", str(ROOT / ".yamllint.yaml"), str(bad)], capture_output=True, text=True
    )
    assert result.returncode != 0 and "duplicat" in result.stdout


def test_deploy_every_container_has_limits_and_runs_as_non_root(rendered_docs):
    workloads = 0
    for directory, doc in rendered_docs:
        for label, pod in pod_specs(doc):
            workloads += 1
            where = f"{directory} {label} {doc['metadata']['name']}"
            assert pod["securityContext"]["runAsNonRoot"] is True, where
            assert pod["securityContext"].get("runAsUser", 1) != 0, where
            for container in pod["containers"] + pod.get("initContainers", []):
                resources = container.get("resources", {})
                for section in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(resources.get(section, {})), (
                        f"{where}/{container['name']}: {section} lacks cpu or memory"
                    )
                context = container.get("securityContext", {})
                assert context.get("allowPrivilegeEscalation") is False, where
                assert context.get("runAsUser", 1) != 0, where
                if "nvidia.com/gpu" in resources.get("limits", {}):
                    tolerations = {t["key"] for t in pod.get("tolerations", [])}
                    assert "nvidia.com/gpu" in tolerations, f"{where}: GPU pod without toleration"
    assert workloads >= 5


def test_deploy_submitter_cronjob_uses_a_projected_kfp_token(rendered_docs):
    cronjobs = [doc for d, doc in rendered_docs if doc["kind"] == "CronJob"]
    assert cronjobs
    for cronjob in cronjobs:
        pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "rfdetr-submitter"
        assert pod["automountServiceAccountToken"] is False
        sources = [s for v in pod["volumes"] for s in v.get("projected", {}).get("sources", [])]
        token = next(s["serviceAccountToken"] for s in sources if "serviceAccountToken" in s)
        assert token["audience"] == "pipelines.kubeflow.org"
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["KF_PIPELINES_SA_TOKEN_PATH"].endswith("/" + token["path"])
        script = " ".join(pod["containers"][0]["command"])
        assert "rfdetr-pipeline submit" in script


def test_deploy_kfp_launcher_points_s3_at_the_secret_keys_kfp_uses(rendered_docs):
    example = yaml.safe_load((MANIFESTS / "base/object-store-secret.example.yaml").read_text())
    _validate(example)
    for _, doc in rendered_docs:
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "kfp-launcher":
            assert doc["data"]["defaultPipelineRoot"].startswith("s3://")
            s3 = yaml.safe_load(doc["data"]["providers"])["s3"]["default"]
            ref = s3["credentials"]["secretRef"]
            assert ref["secretName"] == example["metadata"]["name"] == "mlpipeline-minio-artifact"
            assert {ref["accessKeyKey"], ref["secretKeyKey"]} == set(example["stringData"])
            assert s3["endpoint"]
    assert not any(doc["kind"] == "Secret" for _, doc in rendered_docs), "overlays commit a Secret"


_PLACEHOLDER = re.compile(r"^(REPLACE_WITH_[A-Z_]+|)$")
_SECRETISH = re.compile(r"(password|secret|token|accesskey|access_key|api_key)", re.IGNORECASE)


def _committed_files() -> list[Path]:
    roots = [ROOT / "manifests", ROOT / "containers", ROOT / ".github", ROOT / "docs"]
    return [p for r in roots if r.exists() for p in r.rglob("*") if p.is_file()]


def _secret_problems(path: Path) -> list[str]:
    """Committed Secrets with non-placeholder values, base64 credentials, literal passwords."""
    problems, text = [], path.read_text()
    for doc in yaml.safe_load_all(text) if path.suffix in {".yaml", ".yml"} else []:
        if isinstance(doc, dict) and doc.get("kind") == "Secret":
            for key, value in (doc.get("stringData") or {}).items():
                if not _PLACEHOLDER.match(str(value)):
                    problems.append(f"{path}: {key} is not a placeholder")
            if doc.get("data"):
                problems.append(f"{path}: base64 data in a committed Secret")
    for match in re.finditer(r"[A-Za-z0-9+/]{24,}={0,2}", text):
        try:
            decoded = base64.b64decode(match.group(), validate=True).decode("ascii")
        except ValueError:
            continue
        if _SECRETISH.search(decoded):
            problems.append(f"{path}: base64 credential {match.group()[:8]}...")
    for line in text.splitlines():
        m = re.search(r"(?i)(password|secretkey|accesskey|token)\s*[:=]\s*['\"]?([^\s'\"]+)", line)
        allowed = m and (
            m.group(2).startswith(("${{", "$", "REPLACE_WITH_", "...", "<"))
            or m.group(2) in {"true", "false"}
        )
        if m and not allowed:
            problems.append(f"{path}: literal credential in {line.strip()!r}")
    return problems


def test_deploy_no_real_secret_values_are_committed(tmp_path: Path):
    files = _committed_files()
    assert len(files) > 10
    assert [p for f in files for p in _secret_problems(f)] == []
    leak = tmp_path / "leak.yaml"
    token = base64.b64encode(b"secretkey=wJalrXUtnFEMI/K7MDENG").decode()
    leak.write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {secretkey: hunter22}\n"
        f"---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\ndata: {{x: {token}}}\n"
    )
    problems = _secret_problems(leak)
    assert any("not a placeholder" in p for p in problems)
    assert any("base64 credential" in p for p in problems)
    assert any("literal credential" in p for p in problems)
