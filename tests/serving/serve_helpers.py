"""Helpers shared by the serving tests (imported as ``serve_helpers``)."""

from __future__ import annotations

import io
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rfdetr.api import RFDETRModel


@dataclass
class Server:
    """A running server: its ports, the model it serves, and how long it took to be ready."""

    http: str
    grpc: str
    name: str
    model: RFDETRModel
    onnx: Path
    startup_s: float
    proc: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        """The process runs and answers ``/v2/health/live``."""
        if self.proc.poll() is not None:
            return False
        with urllib.request.urlopen(f"http://{self.http}/v2/health/live", timeout=5) as reply:
            return reply.status == 200


def png_bytes(array: np.ndarray) -> bytes:
    """An ``[H, W, 3]`` uint8 image as PNG file bytes (lossless: decodes to ``array``)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def sample_images() -> list[np.ndarray]:
    """Three RGB images of different, non-square sizes."""
    rng = np.random.default_rng(7)
    return [
        rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in ((50, 70), (64, 64), (33, 90))
    ]


def perturbed_model(size: str, class_names: list[str], seed: int = 0) -> RFDETRModel:
    """A ``size`` model on the CPU with every weight perturbed by N(0, 0.05) (random init has
    zero layers that would make every box alike)."""

    class Model(RFDETRModel):
        pass

    Model.size = size
    torch.manual_seed(seed)
    model = Model(pretrain_weights=None, device="cpu", class_names=class_names)
    with torch.no_grad():
        for parameter in model.model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model
