"""``rfdetr serve``: KServe 0.21's ``ModelServer`` (REST + gRPC, Open Inference Protocol v2), plus:

- a listen host (KServe binds ``0.0.0.0`` / ``[::]``: ``kserve/protocol/rest/server.py``
  ``uvicorn.Config(host="0.0.0.0")``, ``kserve/protocol/grpc/server.py``
  ``add_insecure_port(f"[::]:{port}")``);
- a request-size limit on REST (ASGI, body bytes) and gRPC (max receive length);
- the REST binary-data extension decoded with BYTES kept raw (KServe's
  ``InferRequest.from_bytes`` calls ``set_data_from_numpy(binary_data=False)``: a 500 on every
  encoded image);
- a body without ``Inference-Header-Content-Length`` read as JSON whatever its Content-Type, as
  triton-inference-server/server ``docs/protocol/extension_binary_data.md`` defines it (KServe's
  ``DataPlane.decode_inference_request`` refuses it, so ``curl -d @request.json`` failed);
- bad requests answered 400 with one line (FastAPI's 422s, KServe's decoding
  ``KeyError``/``ValueError``/``TypeError`` 500s); the model's own failures stay 500.
"""

from __future__ import annotations

import logging
from concurrent import futures
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from grpc import aio
from kserve import ModelServer
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
from kserve.errors import InvalidInput
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput
from kserve.protocol.rest.server import RESTServer
from kserve.protocol.rest.v2_datamodels import InferenceRequest
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive, Scope, Send

from rfdetr.serving.model import RFDETRServedModel

logger = logging.getLogger(__name__)


class BodyLimit:
    """ASGI wrapper: refuse a body over ``max_bytes`` with a 400, by its Content-Length or, for
    a chunked body, while reading it (at most ``max_bytes`` are held, then replayed)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > self.max_bytes:
                await _reply_400(send, self._message(int(declared)))
                return
            await self.app(scope, receive, send)
            return
        messages, seen = [], 0
        while True:
            message = await receive()
            messages.append(message)
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                await _reply_400(send, self._message(seen))
                return
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    def _message(self, size: int) -> str:
        return f"request body of {size}+ bytes is over the limit of {self.max_bytes} bytes"


async def _reply_400(send: Send, message: str) -> None:
    response = JSONResponse({"error": message}, status_code=HTTPStatus.BAD_REQUEST)
    await send({"type": "http.response.start", "status": 400, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


async def _bad_request(_: Request, error: Exception) -> JSONResponse:
    if isinstance(error, HTTPException):  # FastAPI's own refusals ({"detail"}), e.g. bad JSON
        text = f"malformed request: {error.detail}" if error.status_code == 400 else error.detail
        return JSONResponse({"error": text}, status_code=error.status_code, headers=error.headers)
    if isinstance(error, RequestValidationError):
        text = _first_problem(error.errors())
    else:
        text = f"malformed request: {type(error).__name__}: {error}"
    logger.info("400: %s", text)
    return JSONResponse({"error": text}, status_code=HTTPStatus.BAD_REQUEST)


def _first_problem(errors: Any) -> str:
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"malformed request body: {where}: {first.get('msg', 'invalid')}"


def decode_binary_request(body: bytes, json_length: Any, model_name: str) -> InferRequest:
    """A REST request in the binary-data extension (JSON header, then raw tensors, kept raw for
    ``InferInput.as_numpy``); a length that does not add up, or a bad header: ``InvalidInput``."""
    try:
        header_size = int(json_length)
    except (TypeError, ValueError):
        raise InvalidInput(f"{INFERENCE_CONTENT_LENGTH_HEADER}: not a number") from None
    if not 0 < header_size <= len(body):
        raise InvalidInput(f"{INFERENCE_CONTENT_LENGTH_HEADER} {header_size} exceeds the body")
    try:
        header = orjson.loads(body[:header_size])
        inputs, raws, offset = [], [], header_size
        for item in header["inputs"]:
            params = dict(item.get("parameters") or {})
            size = params.pop("binary_data_size", None)
            inputs.append(
                InferInput(item["name"], list(item["shape"]), item["datatype"], None, params)
            )
            if size is None:
                inputs[-1].data = item["data"]
                raws.append(None)
                continue
            if not isinstance(size, int) or size < 0 or offset + size > len(body):
                raise InvalidInput(
                    f"input {item['name']!r}: binary_data_size {size} exceeds the body"
                )
            raws.append(body[offset : offset + size])
            offset += size
        outputs = [
            RequestedOutput(out["name"], out.get("parameters"))
            for out in header.get("outputs") or []
        ]
    except InvalidInput:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise InvalidInput(
            f"malformed inference request header ({type(error).__name__}: {error})"
        ) from None
    if offset != len(body):
        raise InvalidInput(f"{len(body) - offset} bytes after the last input's binary data")
    return InferRequest(
        model_name,
        inputs,
        request_id=header.get("id"),
        raw_inputs=raws,
        parameters=header.get("parameters"),
        request_outputs=outputs or None,
    )


class _DataPlane(DataPlane):
    def decode_inference_request(
        self, body: Any, headers: dict[str, str], model_name: str
    ) -> InferRequest:
        length = headers.get(INFERENCE_CONTENT_LENGTH_HEADER)
        if isinstance(body, bytes):  # not sent as application/json
            if length is not None:
                return decode_binary_request(body, length, model_name)
            try:  # all JSON, whatever its Content-Type (``curl -d`` sends a form's)
                body = InferenceRequest.model_validate_json(body)
            except ValidationError as error:
                raise InvalidInput(_first_problem(error.errors())) from None
        return super().decode_inference_request(body, headers, model_name)


class _RESTServer(RESTServer):
    def __init__(self, *args: Any, host: str, max_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.host = host  # uvicorn reads it when it binds
        self.max_bytes = max_bytes

    def _add_middlewares(self, app: FastAPI) -> None:
        super()._add_middlewares(app)
        app.add_middleware(BodyLimit, max_bytes=self.max_bytes)

    def _add_exception_handlers(self, app: FastAPI) -> None:
        super()._add_exception_handlers(app)
        kinds = (HTTPException, RequestValidationError, KeyError, ValueError, TypeError, IndexError)
        for kind in kinds:
            app.add_exception_handler(kind, _bad_request)


class _GRPCServer(GRPCServer):
    """KServe's gRPC server (same servicer and interceptor) on a chosen host."""

    def __init__(self, *args: Any, host: str, max_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.host = host
        self.max_bytes = max_bytes

    async def start(self, max_workers: int) -> None:
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(ExceptionToStatusInterceptor(),),
            options=[
                ("grpc.max_receive_message_length", self.max_bytes),
                ("grpc.max_send_message_length", self.max_bytes),
            ],
        )
        servicer = InferenceServicer(self._data_plane, self._model_repository_extension)
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        address = f"{self.host}:{self._port}"
        if not self._server.add_insecure_port(address):
            raise OSError(f"gRPC: cannot listen on {address}")
        logger.info("gRPC server on %s", address)
        await self._server.start()
        await self._server.wait_for_termination()


class RFDETRModelServer(ModelServer):
    """``ModelServer`` with a listen host and a request size limit (one worker process)."""

    def __init__(self, host: str, max_bytes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.host = host
        self.max_bytes = max_bytes
        self.dataplane = _DataPlane(model_registry=self.registered_models)

    def start(self, models: list[Any]) -> None:  # ModelServer.start, less multi-process
        import asyncio

        self._register_and_check_atleast_one_model_is_ready(models)
        self._rest_server = _RESTServer(
            "kserve.model_server:app",
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
            host=self.host,
            max_bytes=self.max_bytes,
            grace_period=self.grace_period,
            timeout_keep_alive=self.timeout_keep_alive,
        )
        self.servers.append(self._rest_server.start())
        if self.enable_grpc:
            self._grpc_server = _GRPCServer(
                self.grpc_port,
                self.dataplane,
                self.model_repository_extension,
                kwargs={},
                grace_period=self.grace_period,
                host=self.host,
                max_bytes=self.max_bytes,
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())


def serve(model: RFDETRServedModel, host: str, http_port: int, grpc_port: int) -> None:
    """Serve the loaded ``model`` until SIGTERM/SIGINT (REST on ``http_port``, gRPC on
    ``grpc_port``; 0 turns gRPC off)."""
    server = RFDETRModelServer(
        host=host,
        max_bytes=model.limits.max_request_bytes,
        http_port=http_port,
        grpc_port=grpc_port,
        enable_grpc=grpc_port > 0,
        grace_period=5,
        enable_latency_logging=False,
    )
    server.start([model])
