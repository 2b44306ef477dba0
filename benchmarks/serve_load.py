"""Load on ``rfdetr serve``: requests/s and p50/p99 latency, batch 1 vs dynamic batching.

Exports a model (default Nano, random weights: latency does not depend on the weights' values)
or takes ``--onnx``, then for each server setting starts ``rfdetr serve`` on 127.0.0.1 (free
ports), waits for ready, and runs ``--clients`` threads that each send ``--requests`` one-image
inference requests back to back (a 640x480 JPEG, tritonclient HTTP or gRPC). A warm-up request
per client is not timed. Latency is per request as the client sees it (encode, network, server,
decode). The server is stopped with SIGTERM before the next setting starts.

Usage:
    python benchmarks/serve_load.py [--size nano] [--clients 4] [--requests 10] \\
        [--protocol http|grpc] [--threads 2] [--max-batch 8] [--max-latency-ms 10] [--onnx F]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _export(size: str, folder: Path) -> Path:
    from rfdetr.api import RFDETRModel

    class Model(RFDETRModel):
        pass

    Model.size = size
    model = Model(pretrain_weights=None, device="cpu", class_names=[f"c{i}" for i in range(3)])
    return model.export(folder, verify=False)


def _start(onnx: Path, threads: int, max_batch: int, latency_ms: float, log: Path) -> tuple:
    http, grpc = _free_port(), _free_port()
    command = [
        sys.executable, "-m", "rfdetr", "serve", "--model", str(onnx), "--name", "bench",
        "--host", "127.0.0.1", "--port", str(http), "--grpc-port", str(grpc),
        "--threads", str(threads), "--max-batch", str(max_batch),
        "--max-latency-ms", str(latency_ms), "--max-images", str(max(16, max_batch)),
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    started = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=2):
                break
        except OSError:
            time.sleep(0.1)
    return proc, f"127.0.0.1:{http}", f"127.0.0.1:{grpc}", time.monotonic() - started


def _client(protocol: str, url: str, jpeg: bytes):
    if protocol == "http":
        import tritonclient.http as module
    else:
        import tritonclient.grpc as module
    client = module.InferenceServerClient(url)
    item = module.InferInput("images", [1], "BYTES")
    item.set_data_from_numpy(np.array([jpeg], dtype=object))
    return lambda: client.infer("bench", [item])


def _load(protocol: str, url: str, clients: int, requests: int, jpeg: bytes) -> tuple:
    latencies: list[float] = []
    lock, gate = threading.Lock(), threading.Barrier(clients + 1)

    def run() -> None:
        call = _client(protocol, url, jpeg)  # per thread: tritonclient.http runs on gevent
        call()  # warm-up, untimed
        gate.wait()
        for _ in range(requests):
            start = time.perf_counter()
            call()
            with lock:
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=run) for _ in range(clients)]
    for thread in threads:
        thread.start()
    gate.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if len(latencies) != clients * requests:
        raise SystemExit(f"{clients * requests - len(latencies)} request(s) failed (see above)")
    ms = np.array(latencies) * 1000
    return len(ms) / wall, np.percentile(ms, 50), np.percentile(ms, 99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="nano")
    parser.add_argument("--onnx", type=Path, default=None, help="serve this file (no export)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=10, help="per client")
    parser.add_argument("--protocol", choices=("http", "grpc"), default="http")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-latency-ms", type=float, default=10.0)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        onnx = args.onnx or _export(args.size, Path(tmp))
        image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=90)
        print(
            f"model {onnx.name}; {args.clients} clients x {args.requests} requests, "
            f"{args.protocol}, 640x480 JPEG, ORT threads {args.threads}, cpus {os.cpu_count()}"
        )
        print(f"{'setting':<28} {'startup s':>9} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8}")
        settings = (("batch 1", 1, 0.0), ("dynamic", args.max_batch, args.max_latency_ms))
        for label, max_batch, latency_ms in settings:
            log = Path(tmp) / f"{max_batch}.log"
            proc, http, grpc, startup = _start(onnx, args.threads, max_batch, latency_ms, log)
            try:
                url = http if args.protocol == "http" else grpc
                rate, p50, p99 = _load(
                    args.protocol, url, args.clients, args.requests, buffer.getvalue()
                )
            finally:
                proc.terminate()
                proc.wait(timeout=60)
            name = f"{label} (max {max_batch}, {latency_ms:g} ms)"
            print(f"{name:<28} {startup:>9.1f} {rate:>7.2f} {p50:>8.1f} {p99:>8.1f}")


if __name__ == "__main__":
    main()
