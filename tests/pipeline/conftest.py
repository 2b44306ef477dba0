"""Fixtures of the pipeline tests: small synthetic datasets and kfp artifacts in ``tmp_path``
(the object store and Pushgateway fixtures are shared, in tests/conftest.py).

Steps run torch single-threaded: tiny models gain nothing from a second thread and lose a lot
to contention on a shared two-core machine; ``OMP_NUM_THREADS`` carries that to the
subprocesses kfp.local starts.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from rfdetr.data.synthetic import make_shapes_dataset

SPLITS = {"train": 8, "valid": 4, "test": 2}


@pytest.fixture(autouse=True)
def _single_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Roboflow-style COCO shapes dataset, 64 px, with a test split (read only)."""
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), splits=SPLITS, image_size=64)


@pytest.fixture
def broken_shapes(shapes: Path, tmp_path: Path) -> Path:
    """A copy of ``shapes`` with one training image missing."""
    copy = Path(shutil.copytree(shapes, tmp_path / "broken"))
    next(iter(sorted((copy / "train").glob("*.jpg")))).unlink()
    return copy


@pytest.fixture
def artifact(tmp_path: Path) -> Callable[..., Any]:
    """``artifact(Dataset, "name", source=None, metadata=None)``: a kfp artifact whose path is
    ``tmp_path/name`` (a copy of ``source`` when given), as a component receives it."""

    def make(cls: type, name: str, source: Path | None = None, metadata: dict | None = None):
        path = tmp_path / name
        if source is not None:
            if source.is_dir():
                shutil.copytree(source, path)
            else:
                shutil.copy2(source, path)
        return cls(name=name, uri=str(path), metadata=dict(metadata or {}))

    return make
