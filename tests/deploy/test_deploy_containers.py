"""Dockerfiles pass hadolint; their final stages are non-root, unbuffered and labelled; the image
tag comes from the package version everywhere (build script, kustomize, components/_image.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from deploy_helpers import MANIFESTS, ROOT, tool

CONTAINERS = ROOT / "containers"
DOCKERFILES = [CONTAINERS / "Dockerfile.gpu", CONTAINERS / "Dockerfile.cpu"]


def _pyproject_version() -> str:
    text = (ROOT / "pyproject.toml").read_text()  # no tomllib: the project supports Python 3.10
    return re.search(r'^version = "([^"]+)"$', text, flags=re.MULTILINE).group(1)


def _build_script(
    *args: str, path: str | None = None, repository: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "IMAGE_REPOSITORY"}
    if path is not None:
        env["PATH"] = path
    if repository is not None:
        env["IMAGE_REPOSITORY"] = repository
    return subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(CONTAINERS / "build.sh"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def _printed_images() -> dict[str, str]:
    out = _build_script("--print").stdout
    return dict(line.split("=", 1) for line in out.strip().splitlines())


def _final_stage(dockerfile: Path) -> str:
    return re.split(r"^FROM ", dockerfile.read_text(), flags=re.MULTILINE)[-1]


def test_deploy_hadolint_passes_both_dockerfiles(tmp_path: Path):
    hadolint = tool("hadolint")
    config = CONTAINERS / ".hadolint.yaml"
    assert yaml.safe_load(config.read_text())["ignored"] == []
    result = subprocess.run(
        [hadolint, "--config", str(config), *map(str, DOCKERFILES)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install kfp\n")
    result = subprocess.run(
        [hadolint, "--config", str(config), str(bad)], capture_output=True, text=True
    )
    assert result.returncode != 0 and "DL3007" in result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_deploy_final_stage_is_non_root_unbuffered_and_labelled(dockerfile: Path):
    text = dockerfile.read_text()
    assert len(re.findall(r"^FROM ", text, flags=re.MULTILINE)) == 2, "multi-stage: build + final"
    final = _final_stage(dockerfile)
    assert "COPY --from=build /opt/venv /opt/venv" in final
    assert not re.search(r"\b(apt-get|gcc|build-essential|pip install)\b", final)
    user = re.findall(r"^USER (\S+)", final, flags=re.MULTILINE)
    assert user and user[-1].split(":")[0] not in {"0", "root"}
    assert "PYTHONUNBUFFERED=1" in final
    assert 'org.opencontainers.image.version="${VERSION}"' in final
    extras = "pipeline,gpu" if dockerfile.name.endswith("gpu") else "pipeline,onnx"
    assert f'".[{extras}]"' in text
    base = re.findall(r"^ARG \w+_IMAGE=(\S+)", text, flags=re.MULTILINE)
    assert base and all(":" in b and not b.endswith(":latest") for b in base)
    # A forced UID (OpenShift restricted SCC, KFP defaultRunAsUser) still has a writable HOME.
    assert "chmod 1777 /home/rfdetr" in final and "chmod -R a+rwX /home/rfdetr/.cache" in final


def test_deploy_image_tag_is_the_package_version_everywhere(monkeypatch):
    from components import _image

    monkeypatch.delenv(_image.IMAGE_ENV, raising=False)
    version = _pyproject_version()
    printed = dict(
        line.split("=", 1) for line in _build_script("--print").stdout.strip().splitlines()
    )
    assert printed["VERSION"] == version
    assert printed["GPU_IMAGE"] == _image.default_image() == f"{_image.IMAGE_REPOSITORY}:{version}"
    assert printed["CPU_IMAGE"] == f"{_image.IMAGE_REPOSITORY}:{version}-cpu"
    import rfdetr

    assert rfdetr.__version__ == version, "rfdetr/__init__.py __version__ differs from pyproject"
    expected = {"base": f"{version}-cpu"}
    for directory, tag in expected.items():
        kustomization = yaml.safe_load((MANIFESTS / directory / "kustomization.yaml").read_text())
        (image,) = kustomization["images"]
        assert image == {"name": _image.IMAGE_REPOSITORY, "newTag": tag}, directory


def test_deploy_build_script_tag_override_and_bad_option():
    result = _build_script("--print", "--tag", "abc123")
    assert "GPU_IMAGE=ghcr.io/rfdetr-pipelines/rfdetr:abc123\n" in result.stdout
    result = _build_script("--frobnicate")
    assert result.returncode == 2 and "unknown option --frobnicate" in result.stderr


def test_deploy_build_script_passes_build_options_to_the_engine(tmp_path: Path):
    """--engine/--only/--build-arg/--volume/--network reach `<engine> build` (a fake podman)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    engine = bin_dir / "podman"
    engine.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\n')
    engine.chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    options = ["--engine", "podman", "--only", "cpu", "--network", "host"]
    options += ["--build-arg", "PYTHON_IMAGE=localhost/py:1", "--volume", "/opt/w:/mnt:ro"]
    result = _build_script(*options, path=path)
    assert result.returncode == 0, result.stderr
    info, build = log.read_text().splitlines()
    assert info == "info"
    assert "--file " + str(CONTAINERS / "Dockerfile.cpu") in build, "--only cpu: the CPU image"
    assert "Dockerfile.gpu" not in build
    for option in ("--network host", "--build-arg PYTHON_IMAGE=localhost/py:1", "--volume /opt/w"):
        assert option in build
    assert f"--tag {_printed_images()['CPU_IMAGE']} {ROOT}" in build
    result = _build_script("--only", "xpu")
    assert result.returncode == 2 and "--only takes gpu or cpu" in result.stderr


def test_deploy_cpu_image_torch_index_defaults_to_pytorch_cpu_wheels():
    """Only containers/verify_local.sh points TORCH_INDEX_URL elsewhere (no pytorch.org there)."""
    text = (CONTAINERS / "Dockerfile.cpu").read_text()
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu\n" in text
    assert '--index-url "${TORCH_INDEX_URL}"' in text


def test_deploy_make_images_without_an_engine_explains_and_succeeds(tmp_path: Path):
    bin_dir = tmp_path / "bin"  # a PATH with the script's tools but no docker or podman
    bin_dir.mkdir()
    for name in ("sed", "head", "dirname", "git"):
        found = shutil.which(name)
        if found:
            (bin_dir / name).symlink_to(found)
    result = _build_script(path=str(bin_dir))
    assert result.returncode == 0, result.stderr
    assert "no working container engine" in result.stdout
    assert "Dockerfile.gpu" in result.stdout and "Dockerfile.cpu" in result.stdout


def test_deploy_set_version_moves_every_image_tag(tmp_path: Path) -> None:
    """`make set-version` is the one command: pyproject and every kustomize tag follow it."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(MANIFESTS, tmp_path / "manifests")
    script = [shutil.which("python3") or "python3", str(CONTAINERS / "set_version.py")]
    done = subprocess.run(
        [*script, "9.8.7", "--root", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert 'version = "9.8.7"' in (tmp_path / "pyproject.toml").read_text()
    kubectl = tool("kubectl")
    for directory, tag in (("overlays/dev", "9.8.7-cpu"),):
        rendered = subprocess.run(
            [kubectl, "kustomize", str(tmp_path / "manifests" / directory)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f"rfdetr:{tag}" in rendered, directory
        assert _pyproject_version() not in rendered.replace("9.8.7", ""), directory
    bad = subprocess.run(
        [*script, "next", "--root", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2 and "is not of the form" in bad.stderr
