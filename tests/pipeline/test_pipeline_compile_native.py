"""``compile --kubernetes-manifest``: the same pipeline as Pipeline + PipelineVersion resources."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pipelines.cli import main
from rfdetr import __version__

IMAGE = "registry.example.com/rfdetr:0123456789ab"
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def _compile(tmp_path: Path, name: str, *extra: str) -> list[dict]:
    out = tmp_path / name
    assert main(["compile", "--output", str(out), "--image", IMAGE, *extra]) == 0
    return list(yaml.safe_load_all(out.read_text()))


def test_native_resources_hold_exactly_the_uploadable_pipeline(tmp_path: Path) -> None:
    spec, platform = _compile(tmp_path, "pipeline.yaml")
    native = _compile(
        tmp_path,
        "resources.yaml",
        "--kubernetes-manifest",
        "--version-name",
        "rfdetr-training-0123456789ab",
        "--namespace",
        "rfdetr",
    )
    assert [(d["apiVersion"], d["kind"]) for d in native] == [
        ("pipelines.kubeflow.org/v2beta1", "Pipeline"),
        ("pipelines.kubeflow.org/v2beta1", "PipelineVersion"),
    ]
    pipeline, version = native
    assert pipeline["metadata"] == {"name": "rfdetr-training", "namespace": "rfdetr"}
    assert version["metadata"] == {"name": "rfdetr-training-0123456789ab", "namespace": "rfdetr"}
    assert version["spec"]["pipelineName"] == pipeline["metadata"]["name"]
    assert version["spec"]["pipelineSpec"] == spec
    assert version["spec"]["platformSpec"] == platform
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {IMAGE, f"{IMAGE}-cpu"}  # GPU steps, and the CPU image of the others


def test_native_version_name_defaults_to_the_package_version(tmp_path: Path) -> None:
    _, version = _compile(tmp_path, "resources.yaml", "--kubernetes-manifest")
    name = version["metadata"]["name"]
    assert name == f"rfdetr-training-{__version__}" and DNS_SUBDOMAIN.match(name)
    assert "namespace" not in version["metadata"]  # kubectl's current namespace applies


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kubernetes-manifest", "--version-name", "Release_1"], "a Kubernetes name needs"),
        (["--kubernetes-manifest", "--version-name=-abc"], "a Kubernetes name needs"),
        (["--kubernetes-manifest", "--namespace", "Team A"], "not a Kubernetes namespace name"),
        (["--version-name", "abc"], "need --kubernetes-manifest"),
    ],
)
def test_native_names_are_checked_before_compiling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "resources.yaml"
    assert main(["compile", "--output", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()
