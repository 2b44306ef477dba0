"""The ``deploy`` step: its InferenceService validates strictly (KServe's vendored CRD, mapped
by tests/k8s/crd_schema.py, and the kserve 0.21 SDK models), and its create / wait / test
request / record logic runs against the stand-in Kubernetes API server (HTTP level).

Ready semantics re-created from KServe (kserve/kserve v0.21 ``pkg/apis/serving/v1beta1``
``inference_service_status.go``): the ``Ready`` condition summarises the components, and
``status.observedGeneration`` says which spec it describes; ``modelStatus.transitionStatus``
``BlockedByFailedLoad`` / ``InvalidSpec`` with ``lastFailureInfo`` is a model that will not load.
"""

from __future__ import annotations

import base64
import copy

import jsonschema
import pytest
from conftest import NAMESPACE
from crd_schema import validate
from model_schema import check

from pipelines.steps.common import StepError
from pipelines.steps.deploy import DEFAULTS, ISVC, MODEL_NAME, deploy_model, render_isvc

URI = "s3://mlpipeline/rfdetr-nano/20261204-120000-run1/"
SETTINGS = {**DEFAULTS, "image": "ghcr.io/rfdetr-pipelines/rfdetr:1.0.0-cpu", "poll_s": 0.01}
ISVC_CRD = "serving.kserve.io_inferenceservices.pruned.yaml"


def _ready(generation: int, url: str) -> dict:
    return {
        "observedGeneration": generation,
        "conditions": [
            {"type": "PredictorReady", "status": "True"},
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-04T12:00:00Z"},
        ],
        "address": {"url": url},
        "url": "http://rfdetr-nano.team-a.example.com",
    }


def _pending() -> dict:
    message = "Configuration is waiting for a Revision to become ready."
    return {"conditions": [{"type": "Ready", "status": "False", "reason": "RevisionMissing",
                            "message": message}]}  # fmt: skip


@pytest.mark.parametrize("canary", [0, 20])
def test_k8s_inference_service_is_strictly_valid_for_kserve_0_21(canary: int) -> None:
    isvc = render_isvc("rfdetr-nano", URI, settings=SETTINGS, min_replicas=0, max_replicas=3,
                       canary_percent=canary)  # fmt: skip
    validate(isvc, ISVC_CRD, "v1beta1")
    check(isvc, "V1beta1InferenceService")
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev extra)")
    predictor = isvc["spec"]["predictor"]
    assert ("canaryTrafficPercent" in predictor) == bool(canary)
    pod = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "p"},
           "template": {"spec": {"containers": predictor["containers"]}}}  # fmt: skip
    kv.validate(pod, "1.32.0", strict=True)  # the container as Kubernetes 1.32 takes it
    broken = copy.deepcopy(isvc)
    broken["spec"]["predictor"]["canaryTrafficPercentage"] = 10
    with pytest.raises(AssertionError, match="canaryTrafficPercentage"):
        check(broken, "V1beta1InferenceService")
    with pytest.raises(jsonschema.ValidationError, match="canaryTrafficPercentage"):
        validate(broken, ISVC_CRD, "v1beta1")


def test_k8s_deploy_creates_waits_tests_and_records(kube, api) -> None:
    from rfdetr.serving.codec import Limits, decode_image

    kube.statuses[("inferenceservices", "rfdetr-nano")] = [_pending(), _ready(1, kube.url)]
    endpoint = deploy_model(URI, settings=SETTINGS, resources=api)
    assert [c.method for c in kube.calls if "inferenceservices" in c.path] == ["POST", "GET", "GET"]
    assert (endpoint.name, endpoint.namespace, endpoint.url) == ("rfdetr-nano", NAMESPACE, kube.url)
    assert endpoint.generation == 1 and "boxes" in endpoint.test_outputs
    (request,) = kube.infer_requests
    (sent,) = request["inputs"]
    assert (sent["name"], sent["datatype"], sent["shape"]) == ("images", "BYTES", [1])
    image = decode_image(sent["data"][0], 0, Limits())  # what `rfdetr serve` does with it
    assert image.size == (128, 96)
    infer = [c for c in kube.calls if c.path.startswith("/v2/")]
    assert infer[0].path == f"/v2/models/{MODEL_NAME}/infer"
    container = kube.objects[(NAMESPACE, "inferenceservices", "rfdetr-nano")]["spec"]["predictor"]
    assert container["containers"][0]["args"][:2] == ["--model", URI]
    assert base64.b64decode(sent["data"][0])[:8] == b"\x89PNG\r\n\x1a\n"


def test_k8s_a_new_version_updates_the_service_and_waits_for_its_generation(kube, api) -> None:
    kube.statuses[("inferenceservices", "rfdetr-nano")] = [_ready(1, kube.url)]
    deploy_model(URI, settings=SETTINGS, resources=api)
    newer = URI.replace("run1", "run2")
    # the old generation stays Ready until KServe has reconciled the new spec
    kube.statuses[("inferenceservices", "rfdetr-nano")] = [_ready(1, kube.url), _pending(),
                                                           _ready(2, kube.url)]  # fmt: skip
    endpoint = deploy_model(newer, settings=SETTINGS, canary_percent=20, resources=api)
    calls = [c for c in kube.calls if "inferenceservices" in c.path]
    assert [c.method for c in calls][-5:] == ["POST", "PATCH", "GET", "GET", "GET"]
    patch = calls[-4].body
    assert calls[-4].content_type == "application/merge-patch+json"
    assert patch["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert patch["spec"]["predictor"]["containers"][0]["args"][1] == newer
    assert endpoint.generation == 2 and endpoint.canary_percent == 20
    assert len(kube.objects) == 1


def test_k8s_a_model_that_fails_to_load_is_one_line(kube, api) -> None:
    failed = {"modelStatus": {"transitionStatus": "BlockedByFailedLoad",
                              "lastFailureInfo": {"reason": "ModelLoadFailed",
                                                  "message": "no ONNX file under\ns3://x/"}},
              "conditions": [{"type": "Ready", "status": "False"}]}  # fmt: skip
    kube.statuses[("inferenceservices", "rfdetr-nano")] = [_pending(), failed]
    with pytest.raises(StepError) as info:
        deploy_model(URI, settings=SETTINGS, resources=api)
    assert str(info.value) == (
        "InferenceService rfdetr-nano failed: ModelLoadFailed: no ONNX file under s3://x/"
    )
    assert not kube.infer_requests


def test_k8s_deploy_times_out_when_never_ready(kube, api) -> None:
    kube.statuses[("inferenceservices", "rfdetr-nano")] = [_pending()]
    with pytest.raises(StepError, match=r"not finished after 0.05s .*RevisionMissing"):
        deploy_model(URI, settings={**SETTINGS, "timeout_s": 0.05}, resources=api)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"canary_percent": 150}, "must be 0-100"),
        ({"min_replicas": 3, "max_replicas": 2}, "0 <= min"),
    ],
)
def test_k8s_deploy_refuses_bad_numbers_before_any_call(kube, api, kwargs, message) -> None:
    with pytest.raises(StepError, match=message):
        deploy_model(URI, settings=SETTINGS, resources=api, **kwargs)
    assert not [c for c in kube.calls if "inferenceservices" in c.path]
    assert ISVC.plural == "inferenceservices"
