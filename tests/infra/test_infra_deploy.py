"""``submit`` / ``schedule`` against a local stand-in for the KFP v2beta1 REST API.

The stand-in answers the endpoints kfp.Client 2.17 calls (healthz, experiments, pipelines,
pipeline upload / upload_version, versions, runs, recurring runs) the way the real API server
does, and records every request so the tests can assert what was sent.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from pipelines.cli import main

API = "/apis/v2beta1"
NOW = "2026-01-01T00:00:00Z"
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]


@dataclass
class KfpStandIn:
    """In-memory KFP API state plus the log of requests."""

    requests: list[Request] = field(default_factory=list)
    experiments: list[dict] = field(default_factory=list)
    pipelines: list[dict] = field(default_factory=list)
    versions: list[dict] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)
    recurring: list[dict] = field(default_factory=list)
    uploads: list[bytes] = field(default_factory=list)
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    url: str = ""

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests]

    def new_id(self, kind: str) -> str:
        return f"{kind}-{next(self.ids)}"


def _name_filter(query: dict[str, str]) -> str | None:
    if "filter" not in query:
        return None
    predicates = json.loads(query["filter"])["predicates"]
    return next(p["stringValue"] for p in predicates if p["key"] == "display_name")


def _listing(key: str, items: list[dict], query: dict[str, str]) -> dict:
    name = _name_filter(query)
    chosen = [i for i in items if name is None or i["display_name"] == name]
    if query.get("sort_by", "").endswith("desc"):
        chosen = chosen[::-1]
    chosen = chosen[: int(query.get("page_size", 100) or 100)]
    return {key: chosen, "total_size": len(chosen)} if chosen else {}


def _route(state: KfpStandIn, req: Request) -> tuple[int, dict]:
    path, method, q = req.path, req.method, req.query
    if (method, path) == ("GET", f"{API}/healthz"):
        return 200, {"multi_user": False}
    if path == f"{API}/experiments":
        if method == "GET":
            return 200, _listing("experiments", state.experiments, q)
        item = {**req.body, "experiment_id": state.new_id("exp"), "created_at": NOW}
        state.experiments.append(item)
        return 200, item
    if (method, path) == ("GET", f"{API}/pipelines"):
        return 200, _listing("pipelines", state.pipelines, q)
    if (method, path) == ("POST", f"{API}/pipelines/upload"):
        pipeline = {
            "pipeline_id": state.new_id("pipe"),
            "display_name": q["name"],
            "created_at": NOW,
        }
        state.pipelines.append(pipeline)
        state.versions.append(
            {"pipeline_id": pipeline["pipeline_id"], "pipeline_version_id": state.new_id("ver"),
             "display_name": q["name"], "created_at": NOW}
        )  # fmt: skip
        return 200, pipeline
    if (method, path) == ("POST", f"{API}/pipelines/upload_version"):
        version = {"pipeline_id": q["pipelineid"], "pipeline_version_id": state.new_id("ver"),
                   "display_name": q["name"], "created_at": NOW}  # fmt: skip
        state.versions.append(version)
        return 200, version
    if method == "GET" and path.startswith(f"{API}/pipelines/") and path.endswith("/versions"):
        pid = path.split("/")[-2]
        return 200, _listing(
            "pipeline_versions", [v for v in state.versions if v["pipeline_id"] == pid], q
        )
    if (method, path) == ("POST", f"{API}/runs"):
        run = {**req.body, "run_id": state.new_id("run"), "state": "PENDING", "created_at": NOW}
        state.runs.append(run)
        return 200, run
    if path == f"{API}/recurringruns":
        if method == "GET":
            mine = [r for r in state.recurring if r["experiment_id"] == q.get("experiment_id")]
            return 200, _listing("recurringRuns", mine, q)
        job = {
            **req.body,
            "recurring_run_id": state.new_id("job"),
            "status": "ENABLED",
            "created_at": NOW,
        }
        state.recurring.append(job)
        return 200, job
    if method == "POST" and path.startswith(f"{API}/recurringruns/") and path.endswith(":disable"):
        job_id = path.rsplit("/", 1)[1].split(":")[0]
        for job in state.recurring:
            if job["recurring_run_id"] == job_id:
                job["mode"], job["status"] = "DISABLE", "DISABLED"
                return 200, {}
    return 404, {"error": "not found", "code": 5, "message": f"no route {method} {path}"}


def _make_handler(state: KfpStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body: Any = None
            ctype = self.headers.get("Content-Type", "")
            if ctype.startswith("multipart/form-data"):
                message = email.parser.BytesParser(policy=email.policy.default).parsebytes(
                    f"Content-Type: {ctype}\r\n\r\n".encode() + raw
                )
                body = {
                    p.get_param("name", header="content-disposition"): p.get_content()
                    for p in message.iter_parts()
                }
                state.uploads += [v if isinstance(v, bytes) else v.encode() for v in body.values()]
            elif raw:
                body = json.loads(raw)
            headers = {k.lower(): v for k, v in self.headers.items()}
            req = Request(self.command, parts.path, query, body, headers)
            state.requests.append(req)
            status, answer = _route(state, req)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _handle

        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            return

    return Handler


@pytest.fixture
def kfp_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[KfpStandIn]:
    """A running stand-in on 127.0.0.1; kfp's context file is kept out of the real home."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in (
        "KF_PIPELINES_TOKEN",
        "KF_PIPELINES_COOKIE",
        "KF_PIPELINES_SA_TOKEN_PATH",
        "KF_PIPELINES_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    import kfp.client.client as kfp_client

    monkeypatch.setattr(
        kfp_client.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "home" / "context.json")
    )
    state = KfpStandIn()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


_PIPELINE_SOURCE = """
from kfp import dsl


@dsl.component(base_image="python:3.11-slim", install_kfp_package=False)
def train(epochs: int, lr: float, model_size: str, use_ema: bool, overrides: dict) -> float:
    return float(epochs) * lr


@dsl.component(base_image="python:3.11-slim", install_kfp_package=False)
def report(score: float) -> str:
    return str(score)


@dsl.pipeline(name="rfdetr-standin")
def pipeline(dataset_uri: str, epochs: int = 10, lr: float = 1e-4, model_size: str = "nano",
             use_ema: bool = True, overrides: dict = {}) -> None:
    t = train(epochs=epochs, lr=lr, model_size=model_size, use_ema=use_ema, overrides=overrides)
    report(score=t.output)
"""


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A compiled two-step pipeline with typed parameters.

    The source lives in its own file: kfp reads component sources with ``inspect`` and cannot
    use this module's postponed (string) annotations.
    """
    import importlib.util

    from kfp import compiler

    folder = tmp_path_factory.mktemp("pkg")
    source = folder / "standin_pipeline.py"
    source.write_text(_PIPELINE_SOURCE)
    spec = importlib.util.spec_from_file_location("standin_pipeline", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = folder / "pipeline.yaml"
    compiler.Compiler().compile(module.pipeline, str(path))
    return path


def _submit(state: KfpStandIn, package: Path, *extra: str) -> int:
    return main(
        [
            "submit",
            str(package),
            "--host",
            state.url,
            "--param",
            "dataset_uri=s3://data/coco",
            *extra,
        ]
    )


def _schedule(state: KfpStandIn, package: Path, *extra: str) -> int:
    return main(
        [
            "schedule",
            str(package),
            "--host",
            state.url,
            "--param",
            "dataset_uri=s3://data/coco",
            *extra,
        ]
    )


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
    assert (
        _submit(kfp_api, package, *args, "--param", "use_ema=false", "--run-name", "nightly") == 0
    )
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
    assert kfp_api.requests[4].query == {"name": "rfdetr-standin"}
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
    assert _submit(kfp_api, package) == 0
    first = len(kfp_api.requests)
    assert _submit(kfp_api, package, "--version-name", "abc1234", "--experiment", "rfdetr") == 0
    calls = kfp_api.calls()[first:]
    assert ("POST", f"{API}/experiments") not in calls
    assert ("POST", f"{API}/pipelines/upload_version") in calls
    upload = next(r for r in kfp_api.requests[first:] if r.path.endswith("upload_version"))
    assert upload.query == {"name": "abc1234", "pipelineid": "pipe-2"}
    assert kfp_api.runs[-1]["pipeline_version_reference"]["pipeline_version_id"] == "ver-5"
    assert len(kfp_api.experiments) == 1


def test_existing_version_name_is_refused(
    kfp_api: KfpStandIn, package: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _submit(kfp_api, package) == 0
    assert _submit(kfp_api, package, "--version-name", "v1") == 0
    assert _submit(kfp_api, package, "--version-name", "v1") == 2
    assert "already has a version 'v1'" in capsys.readouterr().err
    assert len(kfp_api.runs) == 2


def test_bearer_token_comes_from_the_environment(
    kfp_api: KfpStandIn, package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KF_PIPELINES_TOKEN", "t0ken")
    assert _submit(kfp_api, package) == 0
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
    assert _submit(kfp_api, package, *args) == 2
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
        _schedule(
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


def test_schedule_replace_disables_the_previous_schedule(
    kfp_api: KfpStandIn, package: Path
) -> None:
    assert _schedule(kfp_api, package, "--cron", "0 0 3 * * 1", "--name", "weekly") == 0
    assert (
        _schedule(
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
        _schedule(
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
    ],
)
def test_bad_cron_is_rejected_before_any_upload(
    kfp_api: KfpStandIn, package: Path, capsys: pytest.CaptureFixture[str], cron: str, message: str
) -> None:
    assert _schedule(kfp_api, package, "--cron", cron) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert kfp_api.requests == []


def test_five_field_cron_message_suggests_the_six_field_form(
    kfp_api: KfpStandIn, package: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _schedule(kfp_api, package, "--cron", "0 3 * * 1") == 2
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
    assert main(["submit", str(package), "--host", host, "--param", "dataset_uri=x"]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach KFP at {host}" in err and len(err.strip().splitlines()) == 1
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
