"""tritonclient's gRPC client against a running server, in its own process.

tritonclient.grpc and kserve both register the protobuf package ``inference`` (different
``grpc_service.proto`` files) in protobuf's default descriptor pool, so the two cannot be
imported into one process ("duplicate symbol 'inference.ServerLiveRequest'"). The in-process
tests import kserve; the gRPC client therefore runs here, as ``python grpc_probe.py URL MODEL
OUT_DIR``, and writes ``OUT_DIR/probe.json`` (health, metadata, refusals) and ``OUT_DIR/probe.npz``
(each call's outputs as ``<call>/<output>``).

Calls: ``images`` (the serve_helpers sample images as encoded PNGs, threshold "0.0" as a string:
KServe's InferParameter has no double), ``tensor`` (the same images preprocessed with
``rfdetr.inference.preprocess`` to the model's 64 px input, with ``orig_size``), and a garbage
image that must be refused.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from serve_helpers import png_bytes, sample_images
from tritonclient.utils import InferenceServerException

from rfdetr.inference import preprocess, to_float_chw

OUTPUTS = ("boxes", "scores", "class_ids", "class_names", "batch_index")


def _input(name: str, datatype: str, array: np.ndarray) -> grpcclient.InferInput:
    item = grpcclient.InferInput(name, list(array.shape), datatype)
    item.set_data_from_numpy(array)
    return item


def main(url: str, model: str, out: Path) -> None:
    client = grpcclient.InferenceServerClient(url)
    report: dict = {
        "health": [client.is_server_live(), client.is_server_ready(), client.is_model_ready(model)],
        "metadata": client.get_model_metadata(model, as_json=True),
    }
    images = sample_images()
    files = np.array([png_bytes(i) for i in images], dtype=object)
    batch, sizes = preprocess([to_float_chw(i) for i in images], 64, "cpu")
    calls = {
        "images": [_input("images", "BYTES", files)],
        "tensor": [
            _input("input", "FP32", batch.numpy()),
            _input("orig_size", "INT64", sizes.numpy().astype(np.int64)),
        ],
    }
    arrays = {}
    for call, inputs in calls.items():
        result = client.infer(model, inputs, parameters={"threshold": "0.0"})
        for name in OUTPUTS:
            value = result.as_numpy(name)
            arrays[f"{call}/{name}"] = value.astype(str) if value.dtype == object else value
    garbage = np.array([np.random.default_rng(1).bytes(5000)], dtype=object)
    try:
        client.infer(model, [_input("images", "BYTES", garbage)])
        report["garbage"] = "accepted"
    except InferenceServerException as error:
        report["garbage"] = {"status": error.status(), "message": error.message()}
    (out / "probe.json").write_text(json.dumps(report))
    np.savez(out / "probe.npz", **arrays)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
