"""``plot_training_curves``: the training run's metrics_plot.png."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from rfdetr.evaluation.plots import plot_training_curves


def test_evaluation_training_curves_drawn(tmp_path) -> None:
    records = [
        {
            "epoch": e,
            "train_loss": 10 / (e + 1),
            "lr": 1e-4 * (0.1 if e > 6 else 1),
            "map_50_95": 0.05 * e,
            "ema_map_50_95": 0.055 * e,
        }
        for e in range(10)
    ]
    records[3]["map_50_95"] = None  # an epoch that was not evaluated
    records[4]["train_loss"] = math.nan
    path = plot_training_curves(records, tmp_path / "run" / "metrics_plot.png")
    assert path == tmp_path / "run" / "metrics_plot.png"
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert pixels.shape[1] > 1000 and pixels.std() > 10


def test_evaluation_training_curves_tolerate_missing_keys(tmp_path) -> None:
    """Only a loss logged, or nothing at all: the figure is still written."""
    only_loss = plot_training_curves([{"train_loss": 1.0}, {"train_loss": 0.5}], tmp_path / "a.png")
    empty = plot_training_curves([], tmp_path / "b.png")
    for path in (only_loss, empty):
        with Image.open(path) as image:
            assert image.width > 1000
    with Image.open(only_loss) as a, Image.open(empty) as b:
        assert not np.array_equal(np.asarray(a), np.asarray(b))


def test_evaluation_training_curves_read_training_log_keys(tmp_path) -> None:
    """The training loop logs ``val_map_50_95`` / ``val_ema_map_50_95``: they are drawn."""
    base = [{"epoch": e, "train_loss": 1.0 / (e + 1), "lr": 1e-4} for e in range(5)]
    logged = [
        r | {"val_map_50_95": 0.1 * r["epoch"], "val_ema_map_50_95": 0.12 * r["epoch"]}
        for r in base
    ]
    without = plot_training_curves(base, tmp_path / "without.png")
    with_map = plot_training_curves(logged, tmp_path / "with.png")
    with Image.open(without) as a, Image.open(with_map) as b:
        assert not np.array_equal(np.asarray(a), np.asarray(b))
