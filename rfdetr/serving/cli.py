"""``rfdetr serve --model SOURCE``: an exported or published model behind the Open Inference
Protocol v2 (the ``serve`` extra). Exit codes: 0 stopped by a signal, 2 bad input (no servable
model at ``--model``, bad arguments), 1 the object store failed.
"""

from __future__ import annotations

import argparse
import math
import re
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from rfdetr.errors import UserError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_MAX_REQUEST_MB = 2048  # gRPC's message length limits are C ints: under 2**31 bytes


def add_parser(subparsers: Any) -> None:
    """Register ``rfdetr serve``."""
    parser = subparsers.add_parser(
        "serve",
        help="serve an ONNX model over the Open Inference Protocol v2 (REST and gRPC)",
        description=(
            "Serve a raw-output ONNX export (a file, a folder holding one, or a published "
            "s3:// version; object-store credentials from the environment) with KServe's "
            "ModelServer: /v2/health/live|ready, /v2/models/NAME, /v2/models/NAME/infer taking "
            "encoded images (BYTES 'images') or a preprocessed FP32 'input' [B,3,H,W]."
        ),
    )
    parser.add_argument("--model", required=True, metavar="SOURCE", help="file, folder or s3://")
    parser.add_argument("--name", default=None, help="model name in URLs (default: the file's)")
    parser.add_argument("--host", default="0.0.0.0", help="listen address (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8080, help="REST port (default 8080)")
    parser.add_argument("--grpc-port", type=int, default=8081, help="gRPC port; 0: no gRPC")
    parser.add_argument("--max-batch", type=int, default=8, help="images per runtime call")
    parser.add_argument(
        "--max-latency-ms", type=float, default=5.0, help="longest wait to fill a batch"
    )
    parser.add_argument("--threshold", type=float, default=0.5, help="default score threshold")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    parser.add_argument("--max-request-mb", type=float, default=8.0, help="request body limit")
    parser.add_argument(
        "--max-image-pixels", type=int, default=40_000_000, help="pixels per decoded image"
    )
    parser.add_argument("--max-images", type=int, default=16, help="images per request")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``rfdetr serve``; returns the exit code once the server stops."""
    problem = _check(args) or _ports_taken(args.host, (args.port, args.grpc_port))
    if problem:
        raise UserError(problem)
    # kserve parses sys.argv when imported (kserve/model_server.py, parse_known_args): it must
    # not read ours (argparse would take '--model' as an abbreviation of its '--model_name').
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        from rfdetr.serving.codec import Limits
        from rfdetr.serving.model import RFDETRServedModel, fetch_model
        from rfdetr.serving.server import serve
    finally:
        sys.argv = argv
    limits = Limits(
        max_request_bytes=int(args.max_request_mb * 1024 * 1024),
        max_image_pixels=args.max_image_pixels,
        max_images=args.max_images,
        default_threshold=args.threshold,
    )
    with tempfile.TemporaryDirectory(prefix="rfdetr-serve-") as downloads:  # s3:// files
        path = fetch_model(args.model, Path(downloads))
        name = args.name or path.stem
        model = RFDETRServedModel(
            name, path, limits, args.max_batch, args.max_latency_ms / 1000, args.threads
        )
        model.load()
        serve(model, host=args.host, http_port=args.port, grpc_port=args.grpc_port)
    return 0


def _ports_taken(host: str, ports: tuple[int, ...]) -> str | None:
    """A one-line problem when a port cannot be bound now (the servers would die mid-start)."""
    for port in (p for p in ports if p):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn and gRPC do
            try:
                probe.bind((host, port))
            except OSError as error:
                return f"cannot listen on {host}:{port} ({error.strerror or error})"
    return None


def _check(args: argparse.Namespace) -> str | None:
    if args.name is not None and not _NAME_RE.match(args.name):
        return f"--name {args.name!r}: use letters, digits, '.', '_' or '-' (at most 63)"
    if not 0 <= args.threshold <= 1:
        return f"--threshold {args.threshold}: must be in [0, 1]"
    for flag, value, low in (
        ("--port", args.port, 1),
        ("--grpc-port", args.grpc_port, 0),
        ("--max-batch", args.max_batch, 1),
        ("--max-images", args.max_images, 1),
        ("--max-image-pixels", args.max_image_pixels, 1),
        ("--threads", args.threads or 0, 0),
    ):
        if value < low or (flag.endswith("port") and value > 65535):
            return f"{flag} {value}: out of range"
    if not 0 <= args.max_latency_ms < math.inf:
        return f"--max-latency-ms {args.max_latency_ms}: must be a number >= 0"
    if not 0 < args.max_request_mb < _MAX_REQUEST_MB:
        return f"--max-request-mb {args.max_request_mb}: must be > 0 and < {_MAX_REQUEST_MB}"
    return None
