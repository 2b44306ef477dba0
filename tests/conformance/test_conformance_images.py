"""Image conformance: the references compiled, built, pushed by CI and rendered by kustomize agree.

Three producers of image references are run, not read: ``containers/build.sh --print`` (what a
build tags and pushes), ``rfdetr-pipeline compile --image`` (what every step of the pipeline
pulls; the steps without GPUs the ``-cpu`` image), and deploy.yml's release job (its tag step,
its build step with ``--push`` turned into ``--print``, its compile step), plus ``kubectl
kustomize`` of every overlay (what the CronJob and the PyTorchJob pull). Every reference a pod
can pull must be one that CI pushes for that release.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
from deploy_helpers import (
    ROOT,
    SHA,
    pod_specs,
    release_expressions,
    release_workdir,
    render,
    run_release_steps,
)

GPU_STEPS = {"exec-train", "exec-evaluate"}
RENDERED = ("overlays/dev", "overlays/prod", "overlays/profile")


def _printed(*args: str, repository: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "IMAGE_REPOSITORY"}
    if repository is not None:
        env["IMAGE_REPOSITORY"] = repository
    done = subprocess.run(
        ["bash", str(ROOT / "containers" / "build.sh"), "--print", *args],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )  # fmt: skip
    return dict(line.split("=", 1) for line in done.stdout.strip().splitlines())


def _step_images(pipeline_yaml: str) -> dict[str, str]:
    spec = next(d for d in yaml.safe_load_all(pipeline_yaml) if d and "deploymentSpec" in d)
    executors = spec["deploymentSpec"]["executors"]
    return {name: e["container"]["image"] for name, e in executors.items()}


def _version() -> str:
    return _printed()["VERSION"]


@pytest.mark.parametrize("repository", ["registry.example.com:5000/team/rfdetr", None])
def test_conformance_compile_and_build_name_the_same_images(
    tmp_path: Path, repository: str | None
) -> None:
    """``IMAGE_REPOSITORY=R build.sh --tag T`` builds what ``compile --image R:T`` pulls."""
    printed = _printed("--tag", "t123", repository=repository)
    expected_repository = repository or "ghcr.io/rfdetr-pipelines/rfdetr"
    assert printed["GPU_IMAGE"] == f"{expected_repository}:t123"
    assert printed["CPU_IMAGE"] == f"{expected_repository}:t123-cpu"
    built = {printed["GPU_IMAGE"], printed["CPU_IMAGE"]}
    out = tmp_path / "pipeline.yaml"
    assert main(["compile", "--output", str(out), "--image", printed["GPU_IMAGE"]]) == 0
    images = _step_images(out.read_text())
    for step, image in images.items():
        wanted = printed["GPU_IMAGE"] if step in GPU_STEPS else printed["CPU_IMAGE"]
        assert image == wanted, step
    assert set(images.values()) == built


def test_conformance_what_ci_compiles_and_kustomize_renders_is_what_ci_pushes(
    tmp_path: Path,
) -> None:
    """A release of tag v<version>: the pushed set covers the pipeline and every manifest."""
    version = _version()
    workdir = release_workdir(tmp_path / "ci")
    outputs = workdir / "github_output"
    github = {"GITHUB_SHA": SHA + "cafe", "GITHUB_REF_TYPE": "tag",
              "GITHUB_REF_NAME": f"v{version}", "GITHUB_OUTPUT": str(outputs)}  # fmt: skip
    table = release_expressions("http://127.0.0.1:9", smoke=False)
    run_release_steps(workdir, table, ("Image tag",), extra_env=github)
    tags = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    assert tags == {"sha": SHA, "version": version}
    table = release_expressions("http://127.0.0.1:9", smoke=False, version=tags["version"])
    build = run_release_steps(
        workdir, table, ("Build and push",), edit=lambda s: s.replace("--push", "--print")
    )
    (printed,) = build.values()
    pushed = set(dict(line.split("=", 1) for line in printed.splitlines())["ALL_IMAGES"].split())
    run_release_steps(workdir, table, ("Compile",))
    compiled = set(_step_images((workdir / "pipeline.yaml").read_text()).values())
    assert compiled and compiled <= pushed, compiled - pushed
    rendered = set()
    for directory in RENDERED:
        for doc in yaml.safe_load_all(render(directory)):
            for _, pod in pod_specs(doc or {}):
                rendered |= {c["image"] for c in pod["containers"] if "rfdetr" in c["image"]}
    # The CronJob and the Pushgateway side render the CPU image; the GPU image reaches the cluster
    # through the compiled steps (and, multi-node, the TrainJob/PyTorchJob the train step creates
    # with its own image), not through a manifest (the TrainingRuntime's image is replaced).
    assert rendered and rendered <= pushed, rendered - pushed


def test_conformance_a_release_tag_that_is_not_the_package_version_is_refused(
    tmp_path: Path,
) -> None:
    workdir = release_workdir(tmp_path / "ci")
    github = {"GITHUB_SHA": SHA, "GITHUB_REF_TYPE": "tag", "GITHUB_REF_NAME": "v99.0.0",
              "GITHUB_OUTPUT": str(workdir / "out")}  # fmt: skip
    table = release_expressions("http://127.0.0.1:9", smoke=False)
    with pytest.raises(AssertionError, match="step 'Image tag"):
        run_release_steps(workdir, table, ("Image tag",), extra_env=github)
    assert "version=" not in (workdir / "out").read_text()
