"""Fixtures of the infra tests: a running KFP API stand-in and a compiled two-step pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kfp_standin import KfpStandIn, isolate_kfp_client, serve


@pytest.fixture
def kfp_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[KfpStandIn]:
    """A running stand-in on 127.0.0.1; kfp's context file is kept out of the real home."""
    isolate_kfp_client(monkeypatch, tmp_path / "home")
    with serve() as state:
        yield state


_PIPELINE_SOURCE = """
from kfp import dsl


@dsl.component(base_image="python:3.11-slim", install_kfp_package=False)
def train(epochs: int, lr: float, model_size: str, use_ema: bool, overrides: dict) -> float:
    return float(epochs) * lr


@dsl.component(base_image="python:3.11-slim", install_kfp_package=False)
def report(score: float) -> str:
    return str(score)


@dsl.pipeline(name="rfdetr-standin")
def pipeline(dataset_uri: str, epochs: int = 10, lr: float = 1e-4, model_size: str = "nano",
             use_ema: bool = True, overrides: dict = {}) -> None:
    t = train(epochs=epochs, lr=lr, model_size=model_size, use_ema=use_ema, overrides=overrides)
    report(score=t.output)
"""


@pytest.fixture(scope="session")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A compiled two-step pipeline with typed parameters.

    The source lives in its own file: kfp reads component sources with ``inspect`` and cannot
    use this module's postponed (string) annotations.
    """
    import importlib.util

    from kfp import compiler

    folder = tmp_path_factory.mktemp("pkg")
    source = folder / "standin_pipeline.py"
    source.write_text(_PIPELINE_SOURCE)
    spec = importlib.util.spec_from_file_location("standin_pipeline", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = folder / "pipeline.yaml"
    compiler.Compiler().compile(module.pipeline, str(path))
    return path
