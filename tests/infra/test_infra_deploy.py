"""``submit`` / ``schedule`` against a local stand-in for the KFP v2beta1 REST API.

The stand-in (tests/infra/kfp_standin.py) answers what kfp.Client 2.17 calls the way the real
API server does and records every request, so the tests assert what was sent.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from kfp_standin import API, KfpStandIn, schedule, submit

from pipelines.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_submit_creates_experiment_pipeline_and_run(
    kfp_api: KfpStandIn, package: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "--param",
        "epochs=3",
        "--param",
        "lr=0.0002",
        "--param",
        'overrides={"ema_decay": 0.99}',
    ]
    assert submit(kfp_api, package, *args, "--param", "use_ema=false", "--run-name", "nightly") == 0
    assert kfp_api.calls() == [
        ("GET", f"{API}/healthz"),
        ("GET", f"{API}/experiments"),
        ("POST", f"{API}/experiments"),
        ("GET", f"{API}/pipelines"),
        ("POST", f"{API}/pipelines/upload"),
        ("GET", f"{API}/pipelines/pipe-2/versions"),
        ("POST", f"{API}/runs"),
    ]
    assert kfp_api.requests[2].body == {"display_name": "rfdetr", "namespace": ""}
    digest = hashlib.sha256(package.read_bytes()).hexdigest()
    upload = kfp_api.requests[4].query
    assert set(upload) == {"name", "description"} and upload["name"] == "rfdetr-standin"
    assert upload["description"].startswith("Required: dataset_uri.")  # usage, for the UI
    assert upload["description"].endswith(
        f"rfdetr-pipeline upload of pipeline.yaml; content sha256:{digest}"
    )
    assert kfp_api.uploads == [package.read_bytes()]  # the YAML, byte for byte
    run = kfp_api.requests[-1].body
    assert run["experiment_id"] == "exp-1" and run["display_name"] == "nightly"
    assert run["pipeline_version_reference"] == {
        "pipeline_id": "pipe-2",
        "pipeline_version_id": "ver-3",
    }
    assert run["runtime_config"]["parameters"] == {
        "dataset_uri": "s3://data/coco", "epochs": 3, "lr": 0.0002,
        "overrides": {"ema_decay": 0.99}, "use_ema": False,
    }  # fmt: skip
    assert "pipeline_spec" not in run  # runs reference the uploaded version, not an inline copy
    out = capsys.readouterr().out
    assert "run:        run-4" in out and f"{kfp_api.url}/#/runs/details/run-4" in out


def test_second_submit_reuses_experiment_and_uploads_a_version(
    kfp_api: KfpStandIn, package: Path
) -> None:
    assert submit(kfp_api, package) == 0
    first = len(kfp_api.requests)
    assert submit(kfp_api, package, "--version-name", "abc1234", "--experiment", "rfdetr") == 0
    calls = kfp_api.calls()[first:]
    assert ("POST", f"{API}/experiments") not in calls
    assert ("POST", f"{API}/pipelines/upload_version") in calls
    upload = next(r for r in kfp_api.requests[first:] if r.path.endswith("upload_version"))
    assert upload.query["name"] == "abc1234" and upload.query["pipelineid"] == "pipe-2"
    assert upload.query["description"].endswith(hashlib.sha256(package.read_bytes()).hexdigest())
    assert kfp_api.runs[-1]["pipeline_version_reference"]["pipeline_version_id"] == "ver-5"
    assert len(kfp_api.experiments) == 1


def test_existing_version_name_is_refused(
    kfp_api: KfpStandIn, package: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert submit(kfp_api, package) == 0
    assert submit(kfp_api, package, "--version-name", "v1") == 0
    assert submit(kfp_api, package, "--version-name", "v1") == 2
    assert "already has a version 'v1'" in capsys.readouterr().err
    assert len(kfp_api.runs) == 2


def test_bearer_token_comes_from_the_environment(
    kfp_api: KfpStandIn, package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "t0ken")
    assert submit(kfp_api, package) == 0
    assert {r.headers.get("authorization") for r in kfp_api.requests} == {"Bearer t0ken"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--param", "epoch=3"], "unknown pipeline parameter 'epoch'; did you mean 'epochs'?"),
        (["--param", "epochs=three"], "parameter epochs='three'"),
        (["--param", "epochs=2.5"], "expected an integer"),
        (["--param", "use_ema=maybe"], "expected true or false"),
        (["--param", "overrides=[1]"], "expected a JSON object"),
        (["--param", "noequals"], "expected NAME=VALUE"),
    ],
)
def test_bad_parameters_fail_before_contacting_the_server(
    kfp_api: KfpStandIn,
    package: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    assert submit(kfp_api, package, *args) == 2
    assert message in capsys.readouterr().err
    assert kfp_api.requests == []


def test_missing_required_parameter_and_params_file(
    kfp_api: KfpStandIn, package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["submit", str(package), "--host", kfp_api.url]) == 2
    assert "missing required pipeline parameter(s): dataset_uri" in capsys.readouterr().err
    params = tmp_path / "params.yaml"
    params.write_text("dataset_uri: s3://data/voc\nepochs: 20\noverrides: {lr_drop: 5}\n")
    assert (
        main(
            [
                "submit",
                str(package),
                "--host",
                kfp_api.url,
                "--params-file",
                str(params),
                "--param",
                "epochs=7",
            ]
        )
        == 0
    )
    assert kfp_api.runs[-1]["runtime_config"]["parameters"] == {
        "dataset_uri": "s3://data/voc",
        "epochs": 7,
        "overrides": {"lr_drop": 5},
    }


def test_schedule_creates_a_recurring_run_on_the_uploaded_version(
    kfp_api: KfpStandIn, package: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        schedule(
            kfp_api, package, "--cron", "0 0 3 * * 1", "--name", "weekly", "--param", "epochs=50"
        )
        == 0
    )
    assert kfp_api.calls()[-1] == ("POST", f"{API}/recurringruns")
    job = kfp_api.requests[-1].body
    assert job["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * 1"}}
    assert job["pipeline_version_reference"] == {
        "pipeline_id": "pipe-2",
        "pipeline_version_id": "ver-3",
    }
    assert job["runtime_config"]["parameters"] == {"dataset_uri": "s3://data/coco", "epochs": 50}
    assert (job["display_name"], job["mode"], job["max_concurrency"], job["no_catchup"]) == (
        "weekly",
        "ENABLE",
        1,
        True,
    )
    assert job["experiment_id"] == "exp-1"
    assert "recurring:  job-4 cron '0 0 3 * * 1'" in capsys.readouterr().out


def test_schedule_replace_disables_the_previousschedule(kfp_api: KfpStandIn, package: Path) -> None:
    assert schedule(kfp_api, package, "--cron", "0 0 3 * * 1", "--name", "weekly") == 0
    assert (
        schedule(
            kfp_api,
            package,
            "--cron",
            "0 30 2 * * *",
            "--name",
            "weekly",
            "--version-name",
            "v2",
            "--replace",
        )
        == 0
    )
    assert kfp_api.calls()[-1] == ("POST", f"{API}/recurringruns/job-4:disable")
    assert [(j["recurring_run_id"], j["mode"]) for j in kfp_api.recurring] == [
        ("job-4", "DISABLE"),
        ("job-6", "ENABLE"),
    ]
    assert kfp_api.recurring[1]["pipeline_version_reference"]["pipeline_version_id"] == "ver-5"
    # A third --replace disables only the schedule still enabled.
    assert (
        schedule(
            kfp_api,
            package,
            "--cron",
            "0 0 4 * * *",
            "--name",
            "weekly",
            "--version-name",
            "v3",
            "--replace",
        )
        == 0
    )
    disables = [r.path for r in kfp_api.requests if r.path.endswith(":disable")]
    assert disables == [f"{API}/recurringruns/job-4:disable", f"{API}/recurringruns/job-6:disable"]


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 3 * * 1", "has 5 fields, but KFP's cron has 6, seconds first"),
        ("0 0 0 3 * * 1", "has 7 field(s)"),
        ("0 0 3 * * $", "has characters cron does not use"),
        # KFP's API server parses the cron with robfig/cron v1.2.0 cron.Parse (contract §1.14:
        # kubeflow/pipelines@2.17.0 api_converter.go l.2088); its getRange (parser.go) refuses a
        # value outside the field's bounds (spec.go: hour 0-23, month 1-12, day-of-week 0-6).
        ("0 0 25 * * 1", "hour '25' is outside 0-23"),
        ("0 0 3 * 13 1", "month '13' is outside 1-12"),
        ("0 0 3 * * 7", "day-of-week '7' is outside 0-6"),
        ("0 */0 * * * *", "minute '*/0' is outside 0-59"),
        ("0 0 5-3 * * *", "hour '5-3' is outside 0-23"),
    ],
)
def test_bad_cron_is_rejected_before_any_upload(
    kfp_api: KfpStandIn, package: Path, capsys: pytest.CaptureFixture[str], cron: str, message: str
) -> None:
    assert schedule(kfp_api, package, "--cron", cron) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert kfp_api.requests == []


def test_five_field_cron_message_suggests_the_six_field_form(
    kfp_api: KfpStandIn, package: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert schedule(kfp_api, package, "--cron", "0 3 * * 1") == 2
    assert "did you mean '0 0 3 * * 1'?" in capsys.readouterr().err


def test_unreachable_host_and_bad_package_are_one_line_errors(
    package: Path,
    tmp_path: Path,
    closed_port: int,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    host = f"http://127.0.0.1:{closed_port}"
    # as a user runs it: the CLI's own logging setup (pytest's capture hides log records), where
    # urllib3 had logged a WARNING line for each of its 3 retries before our error line
    result = subprocess.run(
        [sys.executable, "-m", "pipelines", "submit", str(package), "--host", host,
         "--param", "dataset_uri=x"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,  # HOME: tmp_path (above)
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("rfdetr-pipeline submit: error: connecting: cannot reach KFP")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    not_yaml = tmp_path / "p.yaml"
    not_yaml.write_text("a: [1\n")
    assert main(["submit", str(not_yaml), "--host", host]) == 2
    assert "not YAML" in capsys.readouterr().err
    not_yaml.write_text("just: a mapping\n")
    assert main(["submit", str(not_yaml), "--host", host]) == 2
    assert "not a compiled KFP v2 pipeline" in capsys.readouterr().err
    assert main(["submit", str(package), "--host", "localhost:8888"]) == 2
    assert "expected http(s)://host[:port]" in capsys.readouterr().err


def test_module_entry_point_runs_without_installation(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipelines", "schedule", "x.yaml", "--cron", "0 3 * * 1", "--host", "http://h"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "KFP's cron has 6" in result.stderr and "Traceback" not in result.stderr


def test_a_cancelled_wait_terminates_the_run(kfp_api: KfpStandIn, package: Path) -> None:
    """SIGTERM (what a cancelled or timed-out CI job's step gets) ends the wait: run terminated."""
    import os
    import signal
    import time

    kfp_api.run_outcome = "RUNNING"
    command = [sys.executable, "-m", "pipelines", "submit", str(package), "--host", kfp_api.url,
               "--param", "dataset_uri=s3://d/x", "--wait", "--poll", "0.05s",
               "--terminate-on-abort"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    child = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(r.method == "GET" and "/runs/" in r.path for r in kfp_api.requests):
        assert time.monotonic() < deadline and child.poll() is None, "never started waiting"
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    (run,) = kfp_api.runs
    assert ("POST", f"{API}/runs/{run['run_id']}:terminate") in kfp_api.calls()
    assert "interrupted" in err and "Traceback" not in err


def test_a_timed_out_wait_terminates_only_when_asked(kfp_api: KfpStandIn, package: Path) -> None:
    kfp_api.run_outcome = "RUNNING"
    waiting = ("--wait", "--timeout", "0.2s", "--poll", "0.05s")
    assert submit(kfp_api, package, *waiting) == 1
    assert not any(path.endswith(":terminate") for _, path in kfp_api.calls())
    assert submit(kfp_api, package, *waiting, "--terminate-on-abort") == 1
    terminated = [path for _, path in kfp_api.calls() if path.endswith(":terminate")]
    assert terminated == [f"{API}/runs/{kfp_api.runs[-1]['run_id']}:terminate"]


def test_schedule_delete_old_deletes_instead_of_disabling(
    kfp_api: KfpStandIn, package: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cron = ("--cron", "0 0 3 * * 1", "--name", "weekly")
    assert schedule(kfp_api, package, *cron, "--delete-old") == 2
    assert "--delete-old needs --replace" in capsys.readouterr().err
    assert schedule(kfp_api, package, *cron) == 0
    assert schedule(kfp_api, package, *cron, "--replace", "--reuse-version") == 0
    first, second = (job["recurring_run_id"] for job in kfp_api.recurring)
    assert schedule(kfp_api, package, *cron, "--replace", "--reuse-version", "--delete-old") == 0
    assert [j["recurring_run_id"] for j in kfp_api.deleted_recurring] == [first, second]
    assert len(kfp_api.recurring) == 1 and "deleted:    " in capsys.readouterr().out
