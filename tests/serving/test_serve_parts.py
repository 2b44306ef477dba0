"""The serving parts in-process: batcher, request decoding limits, model sources, Seg masks."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest
from pycocotools import mask as mask_utils
from serve_helpers import perturbed_model, png_bytes, sample_images

from rfdetr import storage
from rfdetr.cli import main
from rfdetr.export.runtime import ONNXRuntimeModel
from rfdetr.serving.batcher import MicroBatcher
from rfdetr.serving.codec import Limits, decode_image, parse_request
from rfdetr.serving.model import ModelSourceError, RFDETRServedModel, fetch_model


def _doubling(calls: list[int], delay: float = 0.05):
    def forward(batch: torch.Tensor) -> dict[str, torch.Tensor]:
        calls.append(len(batch))
        time.sleep(delay)
        return {"out": batch * 2, "first": batch[:, :1]}

    return forward


def test_batcher_joins_concurrent_requests_and_returns_each_its_rows() -> None:
    calls: list[int] = []
    batcher = MicroBatcher(_doubling(calls), max_batch=4, max_latency_s=0.2)
    batches = [torch.full((n, 2), float(i)) for i, n in enumerate((1, 2, 1, 3, 1))]

    async def run() -> list[dict[str, torch.Tensor]]:
        return await asyncio.gather(*(batcher.submit(b) for b in batches))

    results = asyncio.run(run())
    for batch, result in zip(batches, results, strict=True):
        assert torch.equal(result["out"], batch * 2) and torch.equal(result["first"], batch[:, :1])
    assert sum(calls) == 8 and max(calls) <= 4 and len(calls) < len(batches)


def test_batcher_runs_an_oversized_request_alone_and_survives_runtime_errors() -> None:
    calls: list[int] = []
    fail = threading.Event()

    def forward(batch: torch.Tensor) -> dict[str, torch.Tensor]:
        if fail.is_set():
            raise RuntimeError("device lost")
        calls.append(len(batch))
        return {"out": batch + 1}

    batcher = MicroBatcher(forward, max_batch=2, max_latency_s=0.0)

    async def run() -> None:
        big = await batcher.submit(torch.zeros(5, 1))
        assert big["out"].shape == (5, 1) and calls == [5]
        fail.set()
        with pytest.raises(RuntimeError, match="device lost"):
            await batcher.submit(torch.zeros(1, 1))
        fail.clear()
        assert torch.equal((await batcher.submit(torch.ones(1, 1)))["out"], torch.full((1, 1), 2.0))

    asyncio.run(run())


def _request(*inputs: InferInput, parameters: dict | None = None) -> InferRequest:
    return InferRequest("m", list(inputs), parameters=parameters)


def _bytes_input(values: list) -> InferInput:
    return InferInput("images", [len(values)], "BYTES", np.array(values, dtype=object))


def test_decode_image_refuses_too_many_pixels_before_decoding() -> None:
    image = png_bytes(np.zeros((40, 50, 3), np.uint8))
    assert decode_image(image, 0, Limits(max_image_pixels=2000)).size == (50, 40)
    with pytest.raises(InvalidInput, match=r"50x40 pixels is over the limit of 1999"):
        decode_image(image, 0, Limits(max_image_pixels=1999))
    for bad, message in ((b"", "empty"), (b"GIF89a" + bytes(20), "not"), ("%%%", "base64")):
        with pytest.raises(InvalidInput, match=message):
            decode_image(bad, 3, Limits())


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> ONNXRuntimeModel:
    model = perturbed_model("tiny", ["a", "b"], seed=1)
    return ONNXRuntimeModel(model.export(tmp_path_factory.mktemp("onnx"), verify=False))


def test_parse_request_refusals_name_the_problem(runtime: ONNXRuntimeModel) -> None:
    png = png_bytes(sample_images()[0])
    tensor = InferInput("input", [1, 3, 64, 64], "FP32", np.zeros((1, 3, 64, 64), np.float32))
    nan = InferInput("input", [1, 3, 64, 64], "FP32", np.full((1, 3, 64, 64), np.nan, np.float32))
    cases = [
        (_request(_bytes_input([png]), tensor), "exactly one"),
        (_request(InferInput("pixels", [1], "BYTES", np.array([png], dtype=object))), "unknown"),
        (_request(_bytes_input([png] * 3)), "send 1 to 2"),
        (_request(_bytes_input([png]), parameters={"threshold": 2}), r"in \[0, 1\]"),
        (_request(_bytes_input([png]), parameters={"threshold": "high"}), "a number"),
        (_request(nan), "NaN"),
        (
            _request(tensor, InferInput("orig_size", [1, 2], "INT64", np.array([[0, 5]]))),
            "positive",
        ),
    ]
    for request, message in cases:
        with pytest.raises(InvalidInput, match=message):
            parse_request(request, runtime, Limits(max_images=2))
    parsed = parse_request(_request(_bytes_input([png])), runtime, Limits())
    assert parsed.batch.shape == (1, 3, 64, 64) and parsed.sizes.tolist() == [[50, 70]]


def test_fetch_model_local_folder_picks_the_raw_export(
    runtime: ONNXRuntimeModel, tmp_path: Path
) -> None:
    onnx = runtime.path
    assert fetch_model(str(onnx)) == onnx
    assert fetch_model(str(onnx.parent)) == onnx  # no -postprocess / .sim copies there
    (tmp_path / "a.onnx").write_bytes(b"x")
    (tmp_path / "b.onnx").write_bytes(b"x")
    (tmp_path / "a-postprocess.onnx").write_bytes(b"x")
    with pytest.raises(ModelSourceError, match=r"2 \(a.onnx, b.onnx\)"):
        fetch_model(str(tmp_path))
    with pytest.raises(ModelSourceError, match="no such file"):
        fetch_model(str(tmp_path / "missing"))


def test_fetch_model_from_s3_follows_latest_and_checks_the_manifest(
    runtime: ONNXRuntimeModel, bucket: str, tmp_path: Path
) -> None:
    version = f"s3://{bucket}/m/v1"
    storage.upload_dir(runtime.path.parent, version)
    pointer = json.dumps({"version": "v1", "uri": version}).encode()
    storage.upload_bytes(pointer, storage.parse_uri(f"s3://{bucket}/m/latest.json"))
    local = fetch_model(f"s3://{bucket}/m/", tmp_path / "a")
    assert local.read_bytes() == runtime.path.read_bytes()
    # a manifest that disagrees with the object (as if the file were swapped after publishing)
    manifest = json.loads(storage.read_bytes(f"{version}/manifest.json"))
    manifest["files"][0]["sha256"] = "0" * 64
    storage.upload_bytes(
        json.dumps(manifest).encode(), storage.parse_uri(f"{version}/manifest.json")
    )
    with pytest.raises(storage.IntegrityError, match=r"differs from manifest\.json"):
        fetch_model(version, tmp_path / "b")
    assert not (tmp_path / "b" / runtime.path.name).exists()
    with pytest.raises(ModelSourceError, match=r"neither manifest\.json"):
        fetch_model(f"s3://{bucket}/nothing/")


def test_cli_serve_bad_model_is_exit_2_with_one_line(tmp_path: Path, capsys) -> None:
    assert main(["serve", "--model", str(tmp_path / "none")]) == 2
    assert main(["serve", "--model", str(tmp_path), "--threshold", "3"]) == 2
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert (
            main(["serve", "--model", str(tmp_path), "--host", "127.0.0.1", "--port", str(port)])
            == 2
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("rfdetr serve: error: ") for line in err)
    assert f"cannot listen on 127.0.0.1:{port}" in err[2]


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (["--max-request-mb", "nan"], "--max-request-mb nan: must be > 0 and < 2048"),
        # gRPC's message limits are C ints: 3000 MB failed mid-start with an OverflowError
        (["--max-request-mb", "3000"], "--max-request-mb 3000.0: must be > 0 and < 2048"),
        (["--max-latency-ms", "nan"], "--max-latency-ms nan: must be a number >= 0"),
        (["--threads", "-3"], "--threads -3: out of range"),
    ],
)
def test_cli_serve_bad_numbers_are_exit_2_before_loading(
    runtime: ONNXRuntimeModel, options: list[str], problem: str, capsys
) -> None:
    assert main(["serve", "--model", str(runtime.path), "--port", "1", *options]) == 2
    assert capsys.readouterr().err == f"rfdetr serve: error: {problem}\n"


def test_cli_serve_a_file_that_is_no_onnx_model_is_exit_2(
    runtime: ONNXRuntimeModel, tmp_path: Path, capsys
) -> None:
    text = tmp_path / "text" / "model.onnx"
    text.parent.mkdir()
    text.write_text("not a model\n")
    cut = tmp_path / "cut" / "model.onnx"  # an interrupted copy of a real export
    cut.parent.mkdir()
    cut.write_bytes(runtime.path.read_bytes()[:4096])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    for source, named in ((text, text), (cut.parent, cut)):  # a file, a folder holding one
        assert main(["serve", "--model", str(source), "--host", "127.0.0.1", "--port", port]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"rfdetr serve: error: {named}: ONNX Runtime cannot load it (")
        assert err.count("\n") == 1, err


def test_segmentation_masks_come_back_as_rle_equal_to_predict(tmp_path: Path) -> None:
    model = perturbed_model("tiny-seg", ["a", "b"], seed=5)
    onnx = model.export(tmp_path, verify=False)
    served = RFDETRServedModel("seg", onnx, Limits(default_threshold=0.0))
    served.load()
    images = sample_images()[:2]
    response = asyncio.run(served.predict(_request(_bytes_input([png_bytes(i) for i in images]))))
    outputs = {o.name: o.as_numpy() for o in response.outputs}
    expected = model.predict(images, threshold=0.0, backend="onnxruntime", onnx_path=onnx)
    for index, detections in enumerate(expected):
        rows = outputs["batch_index"] == index
        masks = [json.loads(m) for m in outputs["masks"][rows]]
        decoded = np.stack(
            [mask_utils.decode({**m, "counts": m["counts"].encode()}) for m in masks]
        )
        assert decoded.shape == detections.mask.shape
        np.testing.assert_array_equal(decoded.astype(bool), detections.mask)
