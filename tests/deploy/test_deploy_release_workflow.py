"""deploy.yml's release steps, run here as a runner would run them, against a KFP stand-in.

The compile, smoke-run and schedule steps of the ``release`` job are executed with bash with
their ``env`` blocks and ``${{ ... }}`` expressions resolved from a table of test values (an
expression missing from the table fails the test, so a changed workflow is noticed). The image
build and push steps need a registry and are not run here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from deploy_helpers import IMAGE_REPOSITORY, ROOT, SHA, release_workdir
from deploy_helpers import release_expressions as _expressions
from deploy_helpers import run_release_steps as _run_release_steps
from kfp_standin import serve


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return release_workdir(tmp_path)


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
