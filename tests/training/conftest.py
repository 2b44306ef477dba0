"""Training-test fixtures: small synthetic shapes datasets and a fast `tiny` run config.

Tiny models are dominated by per-operation overhead, which two threads only add to on a
shared machine, so these tests run torch single-threaded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from training_helpers import tiny_options

from rfdetr.config import RunConfig
from rfdetr.data.synthetic import make_shapes_dataset

SPLITS = {"train": 6, "valid": 3, "test": 2}


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shapes_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Roboflow-style COCO shapes dataset (superclass id 0; classes 1..3), 64 px images."""
    return make_shapes_dataset(tmp_path_factory.mktemp("coco"), splits=SPLITS, image_size=64)


@pytest.fixture(scope="session")
def shapes_yolo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same kind of dataset in YOLO layout, without a test split."""
    splits = {"train": 6, "valid": 3}
    return make_shapes_dataset(
        tmp_path_factory.mktemp("yolo"), fmt="yolo", splits=splits, image_size=(48, 80), seed=1
    )


@pytest.fixture
def tiny_config() -> Callable[..., RunConfig]:
    """``tiny_config(dataset, output_dir, **overrides)`` -> a `RunConfig` of the tiny preset."""

    def make(dataset: Path, output_dir: Path, **overrides: Any) -> RunConfig:
        return RunConfig.from_kwargs("tiny", **tiny_options(dataset, output_dir, **overrides))

    return make
