"""Tiny RF-DETR models with perturbed weights, exported once per test module.

Every parameter gets noise (as benchmarks/parity_upstream.py does), so a zero-initialised layer
(box deltas, reference points) cannot hide a difference between PyTorch and ONNX Runtime.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rfdetr.api import RFDETRModel

CLASS_NAMES = ["cat", "dog", "cow"]


class TinyDetector(RFDETRModel):
    size = "tiny"


class TinySegmenter(RFDETRModel):
    size = "tiny-seg"


def perturbed(model_class: type[RFDETRModel], seed: int = 0) -> RFDETRModel:
    """A tiny model on the CPU with every weight perturbed by N(0, 0.05)."""
    torch.manual_seed(seed)
    model = model_class(pretrain_weights=None, device="cpu", class_names=CLASS_NAMES)
    with torch.no_grad():
        for parameter in model.model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model


@pytest.fixture(scope="module")
def detector() -> RFDETRModel:
    return perturbed(TinyDetector)


@pytest.fixture(scope="module")
def segmenter() -> RFDETRModel:
    return perturbed(TinySegmenter, seed=1)


@pytest.fixture(scope="module")
def detector_onnx(detector: RFDETRModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return detector.export(tmp_path_factory.mktemp("det"), verify=False)


@pytest.fixture(scope="module")
def segmenter_onnx(segmenter: RFDETRModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return segmenter.export(tmp_path_factory.mktemp("seg"), verify=False)


@pytest.fixture
def rgb() -> np.ndarray:
    """A 50 x 70 RGB image (not square, so box scaling and mask resizing are exercised)."""
    return np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)


@pytest.fixture
def tiny() -> SimpleNamespace:
    """The helpers above, for tests that need another model than the shared fixtures."""
    return SimpleNamespace(
        perturbed=perturbed,
        detector_class=TinyDetector,
        segmenter_class=TinySegmenter,
        class_names=CLASS_NAMES,
    )
