"""A stand-in Kubernetes API server on 127.0.0.1, for the job-control tests.

It answers the REST calls of the ``kubernetes`` Python client the way kube-apiserver does for
namespaced custom resources and pods (k8s.io/apiserver ``pkg/endpoints/handlers``; the status
codes and ``Status`` bodies of k8s.io/apimachinery ``pkg/api/errors/errors.go``):

* ``POST /apis/<g>/<v>/namespaces/<ns>/<plural>``: 201 and the object with ``uid``,
  ``resourceVersion``, ``generation: 1``, ``creationTimestamp``; 409 ``AlreadyExists`` when the
  name is taken;
* ``GET .../<plural>/<name>``: 200, or 404 ``NotFound``;
* ``PATCH`` (``application/merge-patch+json``, RFC 7386): 200; ``generation`` grows when the
  spec changes;
* ``DELETE``: 200 ``Status`` ``Success``; later calls get 404;
* ``GET /api/v1/namespaces/<ns>/pods?labelSelector=`` and ``.../pods/<name>/log``.

A test plays the operator: ``statuses[(plural, name)]`` is a list of ``status`` documents, one
applied per ``GET`` of that object (the last one stays). Every request is recorded.
A ``POST /v2/models/<name>/infer`` is answered as a model server would (for the deploy step).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

NOW = "2026-12-04T12:00:00Z"


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    content_type: str = ""


@dataclass
class KubeStandIn:
    objects: dict[tuple[str, str, str], dict] = field(default_factory=dict)  # (ns, plural, name)
    statuses: dict[tuple[str, str], list[dict]] = field(default_factory=dict)
    pods: dict[str, dict] = field(default_factory=dict)  # name -> {"labels": {}, "log": ""}
    logs_forbidden: bool = False
    calls: list[Call] = field(default_factory=list)
    infer_requests: list[dict] = field(default_factory=list)
    versions: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    url: str = ""

    def methods(self, plural: str) -> list[str]:
        return [c.method for c in self.calls if f"/{plural}" in c.path]


def _merge(target: dict, patch: dict) -> dict:
    """RFC 7386 JSON merge patch."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value
    return target


def _status(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details or {},
        "code": code,
    }


class _Handler(BaseHTTPRequestHandler):
    state: KubeStandIn

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        kind = self.headers.get("Content-Type", "")
        self.state.calls.append(Call(method, parts.path, query, body, kind))
        segments = parts.path.strip("/").split("/")
        if segments[:2] == ["v2", "models"] and method == "POST":
            self.state.infer_requests.append(body)
            return self._reply(200, _infer_answer(segments[2], body))
        if segments[:2] == ["api", "v1"]:
            return self._pods(segments, query)
        if len(segments) >= 6 and segments[0] == "apis" and segments[3] == "namespaces":
            group, version, ns, plural = segments[1], segments[2], segments[4], segments[5]
            name = segments[6] if len(segments) > 6 else ""
            return self._custom(method, f"{group}/{version}", ns, plural, name, body)
        self._reply(404, _status(404, "NotFound", f"the server could not find {parts.path}"))

    def _custom(self, method: str, api: str, ns: str, plural: str, name: str, body: Any) -> None:
        objects, key = self.state.objects, (ns, plural, name)
        group = api.split("/")[0]
        if method == "POST":
            name = body["metadata"]["name"]
            key = (ns, plural, name)
            if key in objects:
                message = f'{plural}.{group} "{name}" already exists'
                details = {"name": name, "group": group, "kind": plural}
                return self._reply(409, _status(409, "AlreadyExists", message, details))
            obj = json.loads(json.dumps(body))
            obj["metadata"].update(
                namespace=ns,
                uid=f"uid-{name}",
                generation=1,
                resourceVersion=str(next(self.state.versions)),
                creationTimestamp=NOW,
            )
            objects[key] = obj
            return self._reply(201, obj)
        if key not in objects:
            message = f'{plural}.{group} "{name}" not found'
            return self._reply(404, _status(404, "NotFound", message, {"name": name}))
        obj = objects[key]
        if method == "GET":
            script = self.state.statuses.get((plural, name))
            if script:
                obj["status"] = script.pop(0) if len(script) > 1 else script[0]
            return self._reply(200, obj)
        if method == "PATCH":
            if self.headers.get("Content-Type") != "application/merge-patch+json":
                message = (
                    f"the stand-in speaks merge patch only, not {self.headers.get('Content-Type')}"
                )
                return self._reply(415, _status(415, "UnsupportedMediaType", message))
            before = json.dumps(obj.get("spec"), sort_keys=True)
            _merge(obj, body)
            if json.dumps(obj.get("spec"), sort_keys=True) != before:
                obj["metadata"]["generation"] += 1
            obj["metadata"]["resourceVersion"] = str(next(self.state.versions))
            return self._reply(200, obj)
        if method == "DELETE":
            del objects[key]
            ok = {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Success",
                "details": {"name": name, "group": group, "kind": plural},
            }
            return self._reply(200, ok)
        return self._reply(405, _status(405, "MethodNotAllowed", f"{method} not allowed"))

    def _pods(self, segments: list[str], query: dict[str, str]) -> None:
        if self.state.logs_forbidden:
            message = 'pods is forbidden: User "system:serviceaccount:x:y" cannot list resource'
            return self._reply(403, _status(403, "Forbidden", message))
        ns = segments[3]
        if len(segments) == 5:  # list
            wanted = dict(p.split("=", 1) for p in query.get("labelSelector", "").split(",") if p)
            items = [
                {"metadata": {"name": n, "namespace": ns, "labels": p["labels"]}}
                for n, p in self.state.pods.items()
                if wanted.items() <= p["labels"].items()
            ]
            return self._reply(
                200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
            )
        return self._reply(200, self.state.pods[segments[5]]["log"], "text/plain")

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


def _infer_answer(model: str, body: dict) -> dict:
    """A v2 inference response: one detection per image sent."""
    count = body["inputs"][0]["shape"][0]
    return {
        "model_name": model,
        "outputs": [
            {
                "name": "boxes",
                "datatype": "FP32",
                "shape": [count, 4],
                "data": [1.0, 2.0, 30.0, 40.0] * count,
            },
            {"name": "scores", "datatype": "FP32", "shape": [count], "data": [0.9] * count},
        ],
    }


@contextlib.contextmanager
def serve(kubeconfig: Path) -> Iterator[KubeStandIn]:
    """Run the stand-in and write a kubeconfig (token auth) for it at ``kubeconfig``."""
    state = KubeStandIn()
    handler = type("Handler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "standin",
                "clusters": [{"name": "standin", "cluster": {"server": state.url}}],
                "users": [{"name": "runner", "user": {"token": "pipeline-runner-token"}}],
                "contexts": [
                    {
                        "name": "standin",
                        "context": {"cluster": "standin", "user": "runner", "namespace": "team-a"},
                    }
                ],
            }
        )
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
