"""Fixtures of the conformance tests: the compiled pipeline (both YAML documents) and a tiny
synthetic dataset. The object store fixtures are shared (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.compile import compile_pipeline
from rfdetr.data.synthetic import make_shapes_dataset


@pytest.fixture(scope="session")
def ir_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pipeline compiled with the default cluster settings (what CI uploads)."""
    return compile_pipeline(tmp_path_factory.mktemp("ir") / "pipeline.yaml")


@pytest.fixture(scope="session")
def ir(ir_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(PipelineSpec, PlatformSpec)`` documents of the compiled YAML."""
    spec, platform = yaml.safe_load_all(ir_path.read_text())
    return spec, platform


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Roboflow-style COCO shapes dataset, 64 px, 8/4/2 images (read only)."""
    return make_shapes_dataset(
        tmp_path_factory.mktemp("shapes"), splits={"train": 8, "valid": 4, "test": 2}, image_size=64
    )
