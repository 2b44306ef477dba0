"""A release as deploy.yml runs it: one upload shared by submit and schedule, and ``--wait``.

Against the KFP API stand-in (tests/infra/kfp_standin.py). ``--reuse-version`` may only reuse a
version that holds the same YAML (its sha256 is in the version's description).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from kfp_standin import API, KfpStandIn, schedule, submit


def _uploads(state: KfpStandIn) -> list[str]:
    return [r.path.rsplit("/", 1)[1] for r in state.requests if "/pipelines/upload" in r.path]


def _edited_copy(package: Path, folder: Path) -> Path:
    """The same pipeline with other bytes (as a rebuild with another image tag would give)."""
    copy = folder / "pipeline.yaml"
    shutil.copyfile(package, copy)
    with copy.open("a", encoding="utf-8") as handle:
        handle.write("# rebuilt with another image\n")
    return copy


def test_submit_then_schedule_share_one_uploaded_version(
    kfp_api: KfpStandIn, package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert submit(kfp_api, package) == 0  # an earlier release created the pipeline
    release_yaml = _edited_copy(package, tmp_path)
    release = ("--version-name", "0123456789ab", "--reuse-version")
    assert submit(kfp_api, release_yaml, *release, "--experiment", "rfdetr-smoke") == 0
    smoke_version = kfp_api.runs[-1]["pipeline_version_reference"]["pipeline_version_id"]
    capsys.readouterr()
    assert schedule(kfp_api, release_yaml, *release, "--cron", "0 0 3 * * 1", "--replace") == 0
    out = capsys.readouterr().out
    assert _uploads(kfp_api) == ["upload", "upload_version"]  # none for the schedule
    job = kfp_api.recurring[-1]
    assert job["pipeline_version_reference"]["pipeline_version_id"] == smoke_version
    assert f"version:    0123456789ab ({smoke_version}) (existing, same YAML)" in out
    # Re-running the whole release (a retried CI job) uploads nothing either.
    assert submit(kfp_api, release_yaml, *release) == 0
    assert _uploads(kfp_api) == ["upload", "upload_version"]


def test_first_release_reuses_the_version_that_created_the_pipeline(
    kfp_api: KfpStandIn, package: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = ("--version-name", "0123456789ab", "--reuse-version")
    assert submit(kfp_api, package, *release) == 0
    first = kfp_api.runs[-1]["pipeline_version_reference"]["pipeline_version_id"]
    capsys.readouterr()
    assert schedule(kfp_api, package, *release, "--cron", "0 0 3 * * 1") == 0
    assert _uploads(kfp_api) == ["upload"]
    assert kfp_api.recurring[-1]["pipeline_version_reference"]["pipeline_version_id"] == first
    assert f"version:    rfdetr-standin ({first}) (existing, same YAML)" in capsys.readouterr().out


def test_reuse_refuses_a_version_holding_another_yaml(
    kfp_api: KfpStandIn, package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert submit(kfp_api, package) == 0
    assert submit(kfp_api, package, "--version-name", "v1") == 0
    changed = _edited_copy(package, tmp_path)
    capsys.readouterr()
    code = schedule(
        kfp_api, changed, "--version-name", "v1", "--reuse-version", "--cron", "0 0 3 * * 1"
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "already has a version 'v1'" in err and "holding a different YAML" in err
    assert len(err.splitlines()) == 1
    assert kfp_api.recurring == [] and len(kfp_api.runs) == 2


def test_reuse_refuses_a_version_without_a_content_hash(
    kfp_api: KfpStandIn, package: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert submit(kfp_api, package) == 0
    kfp_api.versions.append(
        {
            "pipeline_id": "pipe-2",
            "pipeline_version_id": "ver-ui",
            "display_name": "from-the-ui",
            "created_at": "2026-01-01T00:00:00Z",
        }
    )  # uploaded by hand in the Kubeflow UI: no description
    capsys.readouterr()
    assert submit(kfp_api, package, "--version-name", "from-the-ui", "--reuse-version") == 2
    assert "no content hash in its description" in capsys.readouterr().err
    assert len(kfp_api.runs) == 1


def test_reuse_uploads_when_no_version_holds_the_yaml_yet(
    kfp_api: KfpStandIn, package: Path, tmp_path: Path
) -> None:
    assert submit(kfp_api, package) == 0
    changed = _edited_copy(package, tmp_path)
    assert submit(kfp_api, changed, "--version-name", "fresh", "--reuse-version") == 0
    assert _uploads(kfp_api) == ["upload", "upload_version"]
    assert kfp_api.versions[-1]["display_name"] == "fresh"


@pytest.mark.parametrize(("outcome", "code"), [("SUCCEEDED", 0), ("FAILED", 1), ("CANCELED", 1)])
def test_wait_follows_the_run_to_its_end(
    kfp_api: KfpStandIn,
    package: Path,
    capsys: pytest.CaptureFixture[str],
    outcome: str,
    code: int,
) -> None:
    kfp_api.run_outcome = outcome
    assert submit(kfp_api, package, "--wait", "--poll", "0.05s") == code
    assert f"state:      {outcome}" in capsys.readouterr().out
    assert kfp_api.calls()[-1] == ("GET", f"{API}/runs/run-4")


def test_wait_gives_up_after_the_timeout(
    kfp_api: KfpStandIn, package: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kfp_api.run_outcome = "RUNNING"
    assert submit(kfp_api, package, "--wait", "--timeout", "0.3s", "--poll", "0.1s") == 1
    err = capsys.readouterr().err.strip()
    assert "run run-4 still RUNNING after 0 s" in err and len(err.splitlines()) == 1
    polls = [c for c in kfp_api.calls() if c == ("GET", f"{API}/runs/run-4")]
    assert 2 <= len(polls) <= 4


@pytest.mark.parametrize("timeout", ["soon", "-5m", "0"])
def test_bad_timeout_is_rejected_before_contacting_the_server(
    kfp_api: KfpStandIn, package: Path, capsys: pytest.CaptureFixture[str], timeout: str
) -> None:
    assert submit(kfp_api, package, "--wait", f"--timeout={timeout}") == 2
    assert f"argument --timeout: '{timeout}': expected" in capsys.readouterr().err
    assert kfp_api.requests == []
