"""Serve a published model on the cluster (the optional ``deploy`` step, after ``publish``): a
KServe ``InferenceService`` running ``rfdetr serve`` on the version, updated in place by a merge
patch (a new revision; ``canary_percent``: KServe's ``canaryTrafficPercent``), awaited through
:mod:`pipelines.k8s_resources`, then sent one test image (docs/deploy.md, "Serving").
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

from pipelines import k8s_resources as k8s
from pipelines._platform import Platform, serving_settings
from pipelines.steps.common import StepError

logger = logging.getLogger(__name__)

ISVC = k8s.Kind("serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService")
MODEL_NAME = "rfdetr"  # the model's name in the v2 URLs
PORT = 8080  # KServe's default port of a custom predictor's container
# ModelStatus.transitionStatus values that will not turn Ready (kserve v1beta1 ModelStatus).
STUCK = {"BlockedByFailedLoad", "InvalidSpec"}
DEFAULTS: dict[str, Any] = {  # the compiled defaults (image always compiled in), and polling
    "image": "",
    **serving_settings(Platform(), image=False),
    "timeout_s": 1800,
    "poll_s": 10.0,
}


@dataclass(frozen=True)
class Endpoint:
    """Where the model answers, as the run records it."""

    name: str
    namespace: str
    url: str
    model_uri: str
    generation: int
    canary_percent: int
    test_latency_ms: float
    test_outputs: list[str]

    def metadata(self) -> dict[str, Any]:
        return asdict(self)


def service_name(published_uri: str, name: str = "") -> str:
    """``name``, else the model's folder of ``s3://bucket/<model>/<version>/``; a DNS-1035
    label (what an InferenceService name must be)."""
    if not name:
        parts = [p for p in published_uri.split("://", 1)[-1].split("/") if p]
        name = parts[-2] if len(parts) >= 3 else "rfdetr"
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63].rstrip("-")
    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", label):
        raise StepError(f"deploy name {name!r}: cannot make a Kubernetes name of it")
    return label


def render_isvc(
    name: str,
    model_uri: str,
    *,
    settings: dict[str, Any],
    min_replicas: int,
    max_replicas: int,
    canary_percent: int,
) -> dict[str, Any]:
    """The ``InferenceService`` serving ``model_uri`` with ``rfdetr serve``."""
    container = {
        "name": "kserve-container",
        "image": settings["image"],
        "command": ["rfdetr", "serve"],
        "args": ["--model", model_uri, "--name", MODEL_NAME, "--port", str(PORT)],
        "env": [{"name": "HOME", "value": "/tmp"}, *k8s.object_store_env(settings["secret"])],
        "ports": [{"containerPort": PORT, "protocol": "TCP"}],
        "resources": k8s.requirements(settings["cpu"], settings["memory"]),
    }
    predictor: dict[str, Any] = {
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "containers": [container],
    }
    if canary_percent:
        predictor["canaryTrafficPercent"] = canary_percent
    return ISVC.manifest(name, {"predictor": predictor})


def judge_ready(obj: dict[str, Any]) -> k8s.Verdict | None:
    """Ready for its current spec (``status.observedGeneration`` caught up with
    ``metadata.generation``), or failed to load."""
    status = obj.get("status") or {}
    model = status.get("modelStatus") or {}
    if model.get("transitionStatus") in STUCK:
        failure = model.get("lastFailureInfo") or {}
        return k8s.Verdict(True, k8s.reason_of(failure) or model["transitionStatus"])
    generation = int(obj["metadata"].get("generation") or 1)
    ready = k8s.condition(obj, "Ready")
    if ready is not None and int(status.get("observedGeneration") or 0) >= generation:
        return k8s.Verdict(False)
    return None


def smoke_request(url: str, timeout_s: float = 60.0) -> tuple[float, list[str]]:
    """One v2 ``infer`` request with a generated PNG; returns (latency ms, output names)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (128, 96), (90, 90, 90))
    ImageDraw.Draw(image).rectangle((30, 20, 90, 70), fill=(20, 40, 200))
    png = io.BytesIO()
    image.save(png, format="PNG")
    data = base64.b64encode(png.getvalue()).decode()
    body = {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": [data]}]}
    target = f"{url.rstrip('/')}/v2/models/{MODEL_NAME}/infer"
    request = urllib.request.Request(
        target, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            answer = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise StepError(f"test request to {target} failed: {' '.join(str(exc).split())}") from None
    latency = (time.perf_counter() - start) * 1000
    outputs = [o.get("name", "") for o in answer.get("outputs") or []]
    if "boxes" not in outputs:
        raise StepError(f"test request to {target}: no 'boxes' in the answer ({outputs})")
    return latency, outputs


def deploy_model(
    model_uri: str,
    *,
    name: str = "",
    settings: dict[str, Any],
    min_replicas: int = 1,
    max_replicas: int = 1,
    canary_percent: int = 0,
    resources: k8s.Resources | None = None,
) -> Endpoint:
    """Apply, wait for ``Ready`` of the new generation, test, and describe the endpoint.

    Raises:
        StepError: bad replica or canary numbers, no API access, a model that fails to load
            (its reason), not Ready within ``timeout_s``, or a failed test request.
    """
    settings = {**DEFAULTS, **settings}
    if not model_uri:
        raise StepError("deploy: no published model URI (publish did not publish)")
    if not 0 <= canary_percent <= 100 or not 0 <= min_replicas <= max_replicas or max_replicas < 1:
        raise StepError(
            f"deploy: canary_traffic_percent {canary_percent} must be 0-100 and replicas "
            f"{min_replicas}-{max_replicas} must satisfy 0 <= min <= max, max >= 1"
        )
    service = service_name(model_uri, name)
    api = resources or k8s.Resources()
    body = render_isvc(
        service,
        model_uri,
        settings=settings,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        canary_percent=canary_percent,
    )
    ready = api.apply_and_wait(ISVC, body, judge_ready, settings, update=True)
    generation = int(ready["metadata"].get("generation") or 1)
    status = ready.get("status") or {}
    url = (status.get("address") or {}).get("url") or status.get("url") or ""
    if not url:
        raise StepError(f"InferenceService {service} is Ready but reports no URL")
    latency, outputs = smoke_request(url)
    logger.info("%s answered the test image in %.0f ms: %s", url, latency, outputs)
    return Endpoint(
        service, api.namespace, url, model_uri, generation, canary_percent, latency, outputs
    )
