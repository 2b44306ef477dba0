"""The GitHub workflows validate against the Actions schema, pass yamllint, run `make test`, and
the deploy workflow takes every credential from the secret store."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml
from deploy_helpers import ROOT, tool

WORKFLOWS = ROOT / ".github" / "workflows"
FILES = [WORKFLOWS / "ci.yml", WORKFLOWS / "deploy.yml"]


def _check(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_deploy_workflows_match_the_github_actions_schema(tmp_path: Path):
    result = _check(*FILES)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs_on: ubuntu-24.04\n    steps: []\n")
    assert _check(broken).returncode != 0


def test_deploy_workflows_pass_yamllint():
    result = subprocess.run(
        [tool("yamllint"), "--strict", "-c", str(ROOT / ".yamllint.yaml"), *map(str, FILES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _steps(workflow: dict, job: str) -> str:
    return "\n".join(str(step.get("run", "")) for step in workflow["jobs"][job]["steps"])


def test_deploy_ci_runs_make_test_and_deploy_releases_by_sha():
    ci = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())
    assert "make test" in _steps(ci, "test")
    deploy_text = (WORKFLOWS / "deploy.yml").read_text()
    deploy = yaml.safe_load(deploy_text)
    triggers = deploy[True]  # YAML 1.1 reads the bare `on` key as a boolean
    assert triggers["push"]["tags"] and "workflow_dispatch" in triggers
    assert deploy["jobs"]["release"]["needs"] == "test"
    release = _steps(deploy, "release")
    assert 'containers/build.sh --push --tag "${{ steps.tag.outputs.sha }}"' in release
    # What the compile, smoke and schedule steps do is run in test_deploy_release_workflow.py.
    for name in ("KF_PIPELINES_ENDPOINT", "KF_PIPELINES_TOKEN"):
        values = set(re.findall(rf"{name}: (.+)", deploy_text))
        assert values and all(v.startswith("${{ secrets.") for v in values), name


def _seconds(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)


def test_deploy_release_limits_permissions_and_installs_no_torch_to_compile():
    deploy = yaml.safe_load((WORKFLOWS / "deploy.yml").read_text())
    assert deploy["permissions"] == {"contents": "read"}
    jobs = deploy["jobs"]
    assert "permissions" not in jobs["test"]  # the workflow's read-only default
    assert jobs["release"]["permissions"] == {"contents": "read", "packages": "write"}
    release = _steps(deploy, "release")
    assert "make install" not in release  # that installs CUDA torch just to compile
    assert '"kfp==2.17.0" "kfp-kubernetes==2.17.0"' in release and "--no-deps ." in release
    pins = re.findall(r'"(kfp(?:-kubernetes)?==[^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert sorted(pins) == ["kfp-kubernetes==2.17.0", "kfp==2.17.0"]  # the same pins


def test_deploy_smoke_wait_ends_before_the_job_and_terminates_the_run():
    deploy = yaml.safe_load((WORKFLOWS / "deploy.yml").read_text())
    release = deploy["jobs"]["release"]
    (smoke,) = [s for s in release["steps"] if s.get("name", "").startswith("Smoke run")]
    timeout = re.search(r"--timeout (\S+)", smoke["run"]).group(1)
    # builds (up to an hour) + the smoke wait must fit in the job, or GitHub kills it mid-wait
    assert _seconds(timeout) + 3600 < release["timeout-minutes"] * 60
    assert "--terminate-on-abort" in smoke["run"]
    assert "--param publish_bucket= " in smoke["run"]  # a smoke run never publishes


def test_deploy_workflow_actions_are_pinned_by_commit():
    """A tag can be moved to other code; a full commit SHA cannot (the comment names the tag)."""
    for path in FILES:
        uses = re.findall(r"uses: (\S+)(.*)", path.read_text())
        assert uses, path
        for action, comment in uses:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", action), (path.name, action)
            assert re.fullmatch(r"\s+# v\d+\.\d+\.\d+", comment), (path.name, action)
