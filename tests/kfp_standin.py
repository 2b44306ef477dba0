"""A local stand-in for the KFP v2beta1 REST API, for the ``submit`` / ``schedule`` tests.

It answers the endpoints kfp.Client 2.17 calls (healthz, experiments, pipelines, pipeline
upload / upload_version, versions, runs, run status, recurring runs) the way the real API server
does, and records every request so the tests can assert what was sent. Run states follow
``KfpStandIn.run_outcome`` (what a finished run reports).
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pipelines.cli import main

API = "/apis/v2beta1"
NOW = "2026-01-01T00:00:00Z"


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
    deleted_recurring: list[dict] = field(default_factory=list)
    uploads: list[bytes] = field(default_factory=list)
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    url: str = ""
    run_outcome: str = "SUCCEEDED"  # the state a run reports when asked for it
    multi_user: bool = False  # what /healthz reports

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
        return 200, {"multi_user": state.multi_user}
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
            "description": q.get("description", ""),
            "namespace": q.get("namespace", ""),
            "created_at": NOW,
        }
        state.pipelines.append(pipeline)
        # The server gives the first version the pipeline's name and description.
        _new_version(state, pipeline["pipeline_id"], q)
        return 200, pipeline
    if (method, path) == ("POST", f"{API}/pipelines/upload_version"):
        return 200, _new_version(state, q["pipelineid"], q)
    if method == "GET" and path.startswith(f"{API}/pipelines/") and path.endswith("/versions"):
        pid = path.split("/")[-2]
        return 200, _listing(
            "pipeline_versions", [v for v in state.versions if v["pipeline_id"] == pid], q
        )
    return _route_runs(state, req)


def _new_version(state: KfpStandIn, pipeline_id: str, query: dict[str, str]) -> dict:
    version = {"pipeline_id": pipeline_id, "pipeline_version_id": state.new_id("ver"),
               "display_name": query["name"], "description": query.get("description", ""),
               "created_at": NOW}  # fmt: skip
    state.versions.append(version)
    return version


def _route_runs(state: KfpStandIn, req: Request) -> tuple[int, dict]:
    """Runs and recurring runs."""
    path, method, q = req.path, req.method, req.query
    if (method, path) == ("POST", f"{API}/runs"):
        run = {**req.body, "run_id": state.new_id("run"), "state": "PENDING", "created_at": NOW}
        state.runs.append(run)
        return 200, run
    if method == "GET" and path.startswith(f"{API}/runs/"):
        run_id = path.rsplit("/", 1)[1]
        for run in state.runs:
            if run["run_id"] == run_id:
                return 200, {**run, "state": run.get("final") or state.run_outcome}
    if method == "POST" and path.startswith(f"{API}/runs/") and path.endswith(":terminate"):
        run_id = path.rsplit("/", 1)[1].split(":")[0]
        for run in state.runs:
            if run["run_id"] == run_id:
                run["final"] = "CANCELED"
                return 200, {}
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
    if method == "DELETE" and path.startswith(f"{API}/recurringruns/"):
        job_id = path.rsplit("/", 1)[1]
        gone = [job for job in state.recurring if job["recurring_run_id"] == job_id]
        if gone:
            state.recurring.remove(gone[0])
            state.deleted_recurring.append(gone[0])
            return 200, {}
    return 404, {"error": "not found", "code": 5, "message": f"no route {method} {path}"}


def make_handler(state: KfpStandIn) -> type[BaseHTTPRequestHandler]:
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


@contextlib.contextmanager
def serve() -> Iterator[KfpStandIn]:
    """A stand-in answering on 127.0.0.1 (``state.url``) until the block ends."""
    state = KfpStandIn()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def _deploy(command: str, state: KfpStandIn, package: Path, extra: tuple[str, ...]) -> int:
    """``rfdetr-pipeline <command>`` against the stand-in, with the required dataset_uri."""
    base = [command, str(package), "--host", state.url, "--param", "dataset_uri=s3://data/coco"]
    return main([*base, *extra])


def submit(state: KfpStandIn, package: Path, *extra: str) -> int:
    return _deploy("submit", state, package, extra)


def schedule(state: KfpStandIn, package: Path, *extra: str) -> int:
    return _deploy("schedule", state, package, extra)


def isolate_kfp_client(monkeypatch: Any, home: Path) -> None:
    """No credentials or endpoint from this machine's environment; kfp's context file in ``home``.

    ``monkeypatch``: pytest's fixture (undone after the test).
    """
    monkeypatch.setenv("HOME", str(home))
    for name in (
        "KF_PIPELINES_TOKEN",
        "KF_PIPELINES_COOKIE",
        "KF_PIPELINES_SA_TOKEN_PATH",
        "KF_PIPELINES_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    import kfp.client.client as kfp_client

    monkeypatch.setattr(kfp_client.Client, "_LOCAL_KFP_CONTEXT", str(home / "context.json"))
