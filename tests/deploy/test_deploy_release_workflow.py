"""deploy.yml's release steps, run here as a runner would run them, against a KFP stand-in.

The compile, smoke-run and schedule steps of the ``release`` job are executed with bash with
their ``env`` blocks and ``${{ ... }}`` expressions resolved from a table of test values (an
expression missing from the table fails the test, so a changed workflow is noticed). The image
build and push steps need a registry and are not run here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from deploy_helpers import ROOT
from kfp_standin import serve

DEPLOY = ROOT / ".github" / "workflows" / "deploy.yml"
RUN_STEPS = ("Compile", "Smoke run", "Point the weekly recurring run")
SHA = "0123456789ab"
IMAGE_REPOSITORY = "ghcr.io/rfdetr-pipelines/rfdetr"
_EXPRESSION = re.compile(r"\$\{\{\s*(.+?)\s*\}\}")


def _expressions(kfp_url: str, smoke: bool) -> dict[str, str]:
    return {
        "steps.tag.outputs.sha": SHA,
        "steps.tag.outputs.version": "",
        "vars.IMAGE_REPOSITORY || 'ghcr.io/rfdetr-pipelines/rfdetr'": IMAGE_REPOSITORY,
        "secrets.KFP_HOST": kfp_url,
        "secrets.KFP_TOKEN": "ci-token",
        "vars.KFP_NAMESPACE": "",
        "vars.KFP_NAMESPACE || 'kubeflow'": "kubeflow",
        "vars.IMAGE_PULL_SECRET": "regcred",
        "vars.DATASET_URI": "s3://datasets/rfdetr/latest",
        "vars.PIPELINE_ROOT": "s3://mlpipeline/rfdetr",
        "vars.OBJECT_STORE_HOST || 'minio-service.kubeflow'": "minio.example.com",
        "vars.OBJECT_STORE_PORT || '9000'": "443",
        "vars.OBJECT_STORE_SECURE || 'false'": "true",
        "vars.PUSHGATEWAY_URL": "http://pushgateway.rfdetr:9091",
        "inputs.cron || '0 0 3 * * 1'": "0 0 3 * * 1",
        "github.event_name == 'push' || inputs.smoke_run": "true" if smoke else "false",
    }


def _resolve(text: str, table: dict[str, str]) -> str:
    def lookup(match: re.Match[str]) -> str:
        if match.group(1) not in table:
            pytest.fail(f"deploy.yml uses ${{{{ {match.group(1)} }}}}; add it to the test table")
        return table[match.group(1)]

    return _EXPRESSION.sub(lookup, text)


def _run_release_steps(workdir: Path, table: dict[str, str]) -> list[str]:
    """Run the chosen steps in order; returns the names of the steps that ran."""
    workflow = yaml.safe_load(DEPLOY.read_text())
    job_env = {**workflow.get("env", {}), **workflow["jobs"]["release"].get("env", {})}
    top_env = {k: _resolve(str(v), table) for k, v in job_env.items()}
    ran = []
    for step in workflow["jobs"]["release"]["steps"]:
        name = step.get("name", "")
        if not name.startswith(RUN_STEPS):
            continue
        if "if" in step and _resolve(step["if"], table) != "true":
            continue
        env = {
            **os.environ,
            **top_env,
            **{k: _resolve(str(v), table) for k, v in step.get("env", {}).items()},
            "HOME": str(workdir / "home"),
        }
        script = _resolve(step["run"], table)
        result = subprocess.run(
            ["bash", "-eo", "pipefail", "-c", script],
            cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, f"step {name!r}: {result.stderr[-2000:]}"
        ran.append(name)
    return ran


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A checkout-like folder whose .venv is this interpreter's environment."""
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    (tmp_path / "manifests").symlink_to(ROOT / "manifests")
    return tmp_path


def test_deploy_release_uploads_one_version_smokes_it_and_moves_the_schedule(
    workdir: Path,
) -> None:
    with serve() as kfp:
        kfp.recurring.append(
            {
                "recurring_run_id": "job-old",
                "display_name": "rfdetr weekly retrain",
                "experiment_id": "exp-1",
                "mode": "ENABLE",
                "status": "ENABLED",
            }
        )  # fmt: skip  (last release's schedule, in the experiment the release reuses)
        kfp.experiments.append({"experiment_id": "exp-1", "display_name": "rfdetr"})
        ran = _run_release_steps(workdir, _expressions(kfp.url, smoke=True))
    assert len(ran) == 3
    assert len(kfp.uploads) == 1  # one version for the smoke run and the schedule
    compiled = kfp.uploads[0].decode()
    assert f"{IMAGE_REPOSITORY}:{SHA}" in compiled
    assert "minio.example.com" in compiled and "http://pushgateway.rfdetr:9091" in compiled
    (smoke,) = kfp.runs
    assert smoke["display_name"] == f"smoke {SHA}"
    assert smoke["runtime_config"]["parameters"]["epochs"] == 1
    assert smoke["runtime_config"]["parameters"]["publish_bucket"] == ""  # never publishes
    assert ("GET", f"/apis/v2beta1/runs/{smoke['run_id']}") in kfp.calls()  # it waited
    old, new = kfp.recurring
    assert (old["recurring_run_id"], old["mode"]) == ("job-old", "DISABLE")
    assert new["pipeline_version_reference"] == smoke["pipeline_version_reference"]
    assert new["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * 1"}}
    # The same arguments (and publishing gate) as the retrain CronJob's, bar the dataset.
    shared = yaml.safe_load((ROOT / "manifests/base/retrain-params.yaml").read_text())
    scheduled = new["runtime_config"]["parameters"]
    assert {k: scheduled[k] for k in shared if k != "dataset_uri"} == {
        k: v for k, v in shared.items() if k != "dataset_uri"
    }
    assert scheduled["require_improvement"] is True
    assert {r.headers.get("authorization") for r in kfp.requests} == {"Bearer ci-token"}


def test_deploy_release_stops_before_rescheduling_when_the_smoke_run_fails(
    workdir: Path,
) -> None:
    with serve() as kfp:
        kfp.run_outcome = "FAILED"
        with pytest.raises(AssertionError, match="step 'Smoke run"):
            _run_release_steps(workdir, _expressions(kfp.url, smoke=True))
    assert len(kfp.runs) == 1 and kfp.recurring == []


def test_deploy_release_without_smoke_run_schedules_directly(workdir: Path) -> None:
    with serve() as kfp:
        ran = _run_release_steps(workdir, _expressions(kfp.url, smoke=False))
    assert [n.split()[0] for n in ran] == ["Compile", "Point"]
    assert kfp.runs == [] and len(kfp.uploads) == 1 and len(kfp.recurring) == 1
