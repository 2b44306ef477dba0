"""The served model: an exported ONNX file under ONNX Runtime behind a ``kserve.Model``, and
where the file comes from (:func:`fetch_model`)."""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import uuid
from pathlib import Path
from typing import Any

from kserve import Model
from kserve.errors import InferenceError, InvalidInput
from kserve.protocol.infer_type import InferRequest, InferResponse
from prometheus_client import Histogram

from rfdetr.errors import UserError
from rfdetr.export.runtime import ONNXRuntimeModel
from rfdetr.inference import to_detections
from rfdetr.serving import codec
from rfdetr.serving.batcher import MicroBatcher

logger = logging.getLogger(__name__)

_NOT_SERVED = ("-postprocess.onnx", ".sim.onnx")
# On KServe's /metrics (the default registry): how well dynamic batching fills runtime calls.
BATCH_IMAGES = Histogram(
    "rfdetr_serve_batch_images",
    "Images per ONNX Runtime call (dynamic batching)",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)


class ModelSourceError(UserError, ValueError):
    """The ``--model`` source holds no servable ONNX file (one line says why)."""


def _pick_onnx(names: list[str], where: str) -> str:
    found = sorted(n for n in names if n.endswith(".onnx") and not n.endswith(_NOT_SERVED))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(found)})"
        raise ModelSourceError(f"{where}: {what} raw-output .onnx file(s); need exactly one")
    return found[0]


def fetch_model(source: str, cache_dir: Path | None = None) -> Path:
    """The local ONNX file for ``source``: a ``.onnx`` file, a folder holding one raw-output
    export, or a published version ``s3://<bucket>/<model>/<version>/`` (the file its
    ``manifest.json`` names, downloaded and checked against the manifest's sha256; credentials
    from the environment); a model root's ``latest.json`` is followed to its version.

    Raises:
        ModelSourceError: nothing servable there. StorageError: the download or its check failed.
    """
    from rfdetr import storage

    if not storage.is_object_uri(source):
        path = Path(source)
        if path.is_file():
            return path
        if not path.is_dir():
            raise ModelSourceError(f"{source}: no such file or folder")
        return path / _pick_onnx([p.name for p in path.iterdir() if p.is_file()], source)
    prefix = storage.parse_uri(source)
    if not storage.exists(prefix.child(storage.MANIFEST_NAME)):
        pointer = prefix.child("latest.json")
        if not storage.exists(pointer):
            raise ModelSourceError(
                f"{source}: neither manifest.json (a published version) nor latest.json (a model "
                "root); give the version's prefix"
            )
        try:
            prefix = storage.parse_uri(json.loads(storage.read_bytes(pointer))["uri"])
        except (ValueError, KeyError, TypeError) as error:
            raise ModelSourceError(f"{pointer}: not a publish pointer ({error})") from None
        logger.info("%s/latest.json points at %s", source.rstrip("/"), prefix)
    manifest = storage.read_manifest(str(prefix))
    name = _pick_onnx([entry.path for entry in manifest.files], str(prefix))
    folder = cache_dir or Path(tempfile.mkdtemp(prefix="rfdetr-serve-"))
    entry, uri = manifest.by_path()[name], prefix.child(name)
    try:
        local = storage.download_file(uri, folder / Path(name).name, sha256=entry.sha256)
    except storage.IntegrityError as err:  # the serving wording; the cause chained
        raise storage.IntegrityError(f"{uri}: downloaded file differs from manifest.json") from err
    logger.info("downloaded %s (%d bytes, sha256 checked against the manifest)", name, entry.size)
    return local


class RFDETRServedModel(Model):
    """An RF-DETR raw-output ONNX export (its metadata giving classes and sizes) served as
    ``/v2/models/<name>`` over the Open Inference Protocol v2 (:mod:`.codec`), with dynamic
    batching (:class:`MicroBatcher`) and ``threads`` ONNX Runtime threads (None: all cores).
    Opening the file raises ExportError if it is no ONNX model, MetadataError if it is not a
    raw-output rfdetr export."""

    def __init__(
        self,
        name: str,
        onnx_path: Path,
        limits: codec.Limits,
        max_batch: int = 8,
        max_latency_s: float = 0.005,
        threads: int | None = None,
    ) -> None:
        super().__init__(name)
        self.limits = limits
        self.runtime = ONNXRuntimeModel(onnx_path, threads=threads)
        self.batcher = MicroBatcher(self.runtime, max_batch, max_latency_s, BATCH_IMAGES.observe)

    def load(self) -> bool:
        """Log what is served and mark it ready (the session was opened with the model)."""
        meta = self.runtime.metadata
        logger.info(
            "model %r: %s %s, input %s, %d classes, batching up to %d within %.1f ms",
            self.name,
            meta.model_name,
            meta.task,
            list(meta.input_shape),
            len(meta.class_names),
            self.batcher.max_batch,
            self.batcher.max_latency_s * 1000,
        )
        self.ready = True
        return self.ready

    def get_input_types(self) -> list[dict[str, Any]]:
        height, width = self.runtime.metadata.input_shape
        return [
            {"name": codec.IMAGES, "datatype": "BYTES", "shape": [-1]},
            {"name": codec.TENSOR, "datatype": "FP32", "shape": [-1, 3, height, width]},
            {"name": codec.ORIG_SIZE, "datatype": "INT64", "shape": [-1, 2]},
        ]

    def get_output_types(self) -> list[dict[str, Any]]:
        outputs = [
            {"name": "boxes", "datatype": "FP32", "shape": [-1, 4]},
            {"name": "scores", "datatype": "FP32", "shape": [-1]},
            {"name": "class_ids", "datatype": "INT64", "shape": [-1]},
            {"name": "class_names", "datatype": "BYTES", "shape": [-1]},
            {"name": "batch_index", "datatype": "INT64", "shape": [-1]},
        ]
        if self.runtime.metadata.segmentation:
            outputs.append({"name": "masks", "datatype": "BYTES", "shape": [-1]})
        return outputs

    async def predict(
        self,
        payload: InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> InferResponse:
        """Decode, run (batched with concurrent requests), post-process, encode."""
        if not isinstance(payload, InferRequest):  # KServe's v1 route hands over the raw body
            raise InvalidInput(f"this server speaks v2 only: POST /v2/models/{self.name}/infer")
        parsed = await asyncio.to_thread(codec.parse_request, payload, self.runtime, self.limits)
        try:
            outputs = await self.batcher.submit(parsed.batch)
        except Exception as error:
            raise InferenceError(f"the runtime failed: {error}") from error
        try:
            infer_outputs = await asyncio.to_thread(self._encode, outputs, parsed)
        except Exception as error:  # our failure, not the request's: a 500, not a 400
            raise InferenceError(f"post-processing failed: {error}") from error
        if payload.from_grpc:  # raw contents: KServe's to_grpc cannot take numpy data as lists
            for output in infer_outputs:
                output.set_data_from_numpy(output.data, binary_data=True)
        return InferResponse(
            response_id=payload.id or str(uuid.uuid4()),
            model_name=self.name,
            infer_outputs=infer_outputs,
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )

    def _encode(self, outputs: dict[str, Any], parsed: codec.ParsedRequest) -> list[Any]:
        runtime = self.runtime
        results = runtime.postprocess(outputs, parsed.sizes, threshold=parsed.threshold)
        detections = [to_detections(result, runtime.class_names) for result in results]
        return codec.encode_detections(detections, runtime.metadata.segmentation)
