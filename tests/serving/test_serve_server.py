"""``rfdetr serve`` for real: tritonclient (HTTP and gRPC) and curl against a running server.

The gRPC client runs in a subprocess (tests/serving/grpc_probe.py says why). The server
(tests/serving/conftest.py) serves a perturbed ``tiny`` model it downloaded from a
published ``s3://`` version on the test SeaweedFS. Its detections are compared with the same
model's ``predict()``: with ``backend="onnxruntime"`` on the same ONNX file (same arithmetic) to
1e-4, and with the PyTorch backend to the export check's tolerances (1e-3 px, 1e-5 score).
"""

from __future__ import annotations

import base64
import json
import re
import struct
import subprocess
import sys
import threading
import urllib.request
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import requests
import supervision as sv
import tritonclient.http as httpclient
from serve_helpers import Server, png_bytes, sample_images
from tritonclient.utils import InferenceServerException

THRESHOLD = 0.0  # every kept query: the most rows to compare


def _rows(result: object, image: int) -> dict[str, np.ndarray]:
    """One image's rows of a response (any client's result object with ``as_numpy``)."""
    keep = result.as_numpy("batch_index") == image
    return {
        name: result.as_numpy(name)[keep]
        for name in ("boxes", "scores", "class_ids", "class_names")
    }


def _assert_same(
    rows: dict[str, np.ndarray], expected: sv.Detections, box_tol: float, score_tol: float
) -> None:
    assert len(rows["scores"]) == len(expected) > 0
    np.testing.assert_allclose(rows["boxes"], expected.xyxy, atol=box_tol, rtol=0)
    np.testing.assert_allclose(rows["scores"], expected.confidence, atol=score_tol, rtol=0)
    np.testing.assert_array_equal(rows["class_ids"], expected.class_id)
    names = [n.decode() if isinstance(n, bytes) else n for n in rows["class_names"]]
    assert names == list(expected.data["class_name"])


def _expected(server: Server, images: list[np.ndarray]) -> tuple[list, list]:
    ort = server.model.predict(
        images, threshold=THRESHOLD, backend="onnxruntime", onnx_path=server.onnx
    )
    eager = server.model.predict(images, threshold=THRESHOLD)
    return ort, eager


def _images_input(images: list[np.ndarray]) -> object:
    item = httpclient.InferInput("images", [len(images)], "BYTES")
    item.set_data_from_numpy(np.array([png_bytes(i) for i in images], dtype=object))
    return item


def test_serve_starts_in_seconds_and_reports_health_and_metadata(
    server: Server, grpc_probe: SimpleNamespace
) -> None:
    assert server.startup_s < 90, f"startup took {server.startup_s:.1f} s"
    http = httpclient.InferenceServerClient(server.http)
    assert http.is_server_live() and http.is_server_ready() and http.is_model_ready(server.name)
    assert grpc_probe.report["health"] == [True, True, True]
    meta = http.get_model_metadata(server.name)
    assert {i["name"]: i["datatype"] for i in meta["inputs"]} == {
        "images": "BYTES", "input": "FP32", "orig_size": "INT64"
    }  # fmt: skip
    assert [i["shape"] for i in meta["inputs"] if i["name"] == "input"] == [[-1, 3, 64, 64]]
    assert {o["name"] for o in meta["outputs"]} == {
        "boxes", "scores", "class_ids", "class_names", "batch_index"
    }  # fmt: skip
    grpc_meta = grpc_probe.report["metadata"]
    assert [o["name"] for o in grpc_meta["outputs"]] == [o["name"] for o in meta["outputs"]]
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{server.name}"):
        out = subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"http://{server.http}{path}"],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        assert out.stdout == "200", path


def test_http_images_equal_predict(server: Server) -> None:
    images = sample_images()
    client = httpclient.InferenceServerClient(server.http)
    result = client.infer(server.name, [_images_input(images)], parameters={"threshold": THRESHOLD})
    ort, eager = _expected(server, images)
    for index in range(len(images)):
        _assert_same(_rows(result, index), ort[index], 1e-4, 1e-4)
        _assert_same(_rows(result, index), eager[index], 1e-3, 1e-5)


@pytest.fixture(scope="module")
def grpc_probe(server: Server, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """What tests/serving/grpc_probe.py saw over gRPC (health, metadata, calls, a refusal)."""
    out = tmp_path_factory.mktemp("grpc")
    script = Path(__file__).with_name("grpc_probe.py")
    run = subprocess.run(
        [sys.executable, str(script), server.grpc, server.name, str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    with np.load(out / "probe.npz") as arrays:
        calls = {key: arrays[key] for key in arrays.files}
    return SimpleNamespace(report=json.loads((out / "probe.json").read_text()), calls=calls)


class _Rows:
    """One probe call's outputs with the ``as_numpy`` of a client result."""

    def __init__(self, calls: dict[str, np.ndarray], call: str) -> None:
        self.calls, self.call = calls, call

    def as_numpy(self, name: str) -> np.ndarray:
        return self.calls[f"{self.call}/{name}"]


def test_grpc_images_and_preprocessed_tensor_equal_predict(
    server: Server, grpc_probe: SimpleNamespace
) -> None:
    ort, _ = _expected(server, sample_images())
    for call in ("images", "tensor"):
        for index in range(len(ort)):
            _assert_same(_rows(_Rows(grpc_probe.calls, call), index), ort[index], 1e-4, 1e-4)
    garbage = grpc_probe.report["garbage"]
    assert "INVALID_ARGUMENT" in garbage["status"] and "not an image" in garbage["message"]


def test_curl_json_request_with_base64_image(server: Server, tmp_path) -> None:
    image = sample_images()[0]
    body = {
        "inputs": [{"name": "images", "shape": [1], "datatype": "BYTES",
                    "data": [base64.b64encode(png_bytes(image)).decode()]}],
        "parameters": {"threshold": THRESHOLD},
    }  # fmt: skip
    (tmp_path / "request.json").write_text(json.dumps(body))
    ort, _ = _expected(server, [image])
    # No Inference-Header-Content-Length: the whole body is the JSON request, whatever its
    # Content-Type (Triton's docs/protocol/extension_binary_data.md); plain `curl -d` sends
    # application/x-www-form-urlencoded, which KServe alone refused.
    for content_type in (["-H", "Content-Type: application/json"], []):
        out = subprocess.run(
            ["curl", "-sS", "-f", *content_type, "--data-binary",
             f"@{tmp_path / 'request.json'}", f"http://{server.http}/v2/models/{server.name}/infer"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        outputs = {o["name"]: o for o in json.loads(out.stdout)["outputs"]}
        boxes = np.array(outputs["boxes"]["data"], np.float32).reshape(outputs["boxes"]["shape"])
        np.testing.assert_allclose(boxes, ort[0].xyxy, atol=1e-4, rtol=0)
        assert outputs["class_names"]["data"] == list(ort[0].data["class_name"])


def test_concurrent_requests_are_batched_and_each_gets_its_own_rows(server: Server) -> None:
    images = sample_images() * 2  # six single-image requests at once, max batch 4
    before = _batch_metrics(server)
    gate = threading.Barrier(len(images))
    results: dict[int, object] = {}

    def send(index: int) -> None:
        client = httpclient.InferenceServerClient(server.http)
        gate.wait(timeout=60)
        results[index] = client.infer(
            server.name,
            [_images_input([images[index]])],
            parameters={"threshold": THRESHOLD},
        )

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    ort, _ = _expected(server, images)
    for index in range(len(images)):
        _assert_same(_rows(results[index], 0), ort[index], 1e-4, 1e-4)
    calls, batched_images = (a - b for a, b in zip(_batch_metrics(server), before, strict=True))
    assert batched_images == len(images)
    assert calls < len(images), "no two concurrent requests shared a runtime call"


def _batch_metrics(server: Server) -> tuple[float, float]:
    """(runtime calls, images) so far, from the server's Prometheus /metrics."""
    with urllib.request.urlopen(f"http://{server.http}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    count = re.search(r"^rfdetr_serve_batch_images_count (\S+)$", text, re.M)
    total = re.search(r"^rfdetr_serve_batch_images_sum (\S+)$", text, re.M)
    assert count and total, "rfdetr_serve_batch_images missing from /metrics"
    return float(count.group(1)), float(total.group(1))


def _huge_png(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of ``width`` x ``height`` (all black; small on disk)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    row = b"\x00" + bytes((width + 7) // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )


def test_hostile_requests_get_400_and_the_server_keeps_answering(server: Server, tmp_path) -> None:
    url = f"http://{server.http}/v2/models/{server.name}/infer"
    client = httpclient.InferenceServerClient(server.http)
    huge = _huge_png(20000, 20000)
    garbage = np.random.default_rng(1).bytes(5000)
    wrong_dtype = httpclient.InferInput("input", [1, 3, 64, 64], "FP64")
    wrong_dtype.set_data_from_numpy(np.zeros((1, 3, 64, 64), np.float64))
    wrong_shape = httpclient.InferInput("input", [1, 3, 32, 32], "FP32")
    wrong_shape.set_data_from_numpy(np.zeros((1, 3, 32, 32), np.float32))
    cases = {
        "garbage image bytes": [_raw_images_input([garbage])],
        "20000x20000 PNG": [_raw_images_input([huge])],
        "FP64 tensor": [wrong_dtype],
        "32x32 tensor": [wrong_shape],
    }
    for what, inputs in cases.items():
        with pytest.raises(InferenceServerException) as caught:
            client.infer(server.name, inputs)
        assert caught.value.status() == "400", what
        assert "\n" not in caught.value.message(), what
        assert server.alive(), f"server died after {what}"
    big_json = (
        b'{"inputs": ['
        + b'{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]},' * 160_000
        + b"{}]}"
    )
    assert len(big_json) > 10_000_000
    posts = {
        "10 MB JSON": big_json,
        "garbage body": garbage,
        "JSON, not an inference request": b'{"hello": "world"}',
    }
    for what, body in posts.items():
        reply = requests.post(
            url, data=body, headers={"Content-Type": "application/json"}, timeout=60
        )
        assert reply.status_code == 400, f"{what}: {reply.status_code} {reply.text[:200]}"
        assert reply.json()["error"], f"{what}: {reply.text[:300]}"
        assert ("over the limit" in reply.json()["error"]) == (what == "10 MB JSON"), what
        assert server.alive(), f"server died after {what}"
    chunked = tmp_path / "chunked.json"  # no Content-Length: the limit counts while reading
    chunked.write_bytes(big_json)
    out = subprocess.run(
        ["curl", "-sS", "-H", "Transfer-Encoding: chunked", "-H", "Content-Type: application/json",
         "--data-binary", f"@{chunked}", "-w", "\n%{http_code}", url],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    body, code = out.stdout.rsplit("\n", 1)
    assert code == "400" and "over the limit" in json.loads(body)["error"], out.stdout[-300:]
    assert server.alive()
    # and a good request still works
    image = sample_images()[1]
    result = client.infer(
        server.name, [_images_input([image])], parameters={"threshold": THRESHOLD}
    )
    ort, _ = _expected(server, [image])
    _assert_same(_rows(result, 0), ort[0], 1e-4, 1e-4)


def test_requests_off_the_v2_json_path_get_one_line_400s(server: Server) -> None:
    url = f"http://{server.http}/v2/models/{server.name}/infer"
    form = requests.post(url, data=b'{"inputs": [{"name": "images"}]}', timeout=60)  # no JSON type
    assert form.status_code == 400, form.text[:300]
    assert form.json()["error"].startswith("malformed request body: inputs.0.shape: "), form.text
    v1 = requests.post(  # KServe also routes its v1 protocol to the model, which takes v2 only
        f"http://{server.http}/v1/models/{server.name}:predict",
        json={"instances": [[1]]},
        timeout=60,
    )
    assert v1.status_code == 400 and "POST /v2/models/" in v1.json()["error"], v1.text[:300]
    assert server.alive()


def _raw_images_input(files: list[bytes]) -> object:
    item = httpclient.InferInput("images", [len(files)], "BYTES")
    item.set_data_from_numpy(np.array(files, dtype=object))
    return item
