"""The train step pushes the total loss and every loss term of the last epoch."""

from __future__ import annotations

from pipelines.steps.train import TrainOutcome, _last_record, _record
from pipelines.telemetry import StepMetrics


def test_pipeline_train_pushes_every_loss_term() -> None:
    history = [
        {"epoch": 0, "train_loss": 9.0, "train_loss_ce": 3.0},
        {
            "epoch": 1,
            "train_loss": 4.0,
            "train_loss_ce": 1.5,
            "train_loss_bbox": 0.25,
            "train_loss_giou": 0.5,
            "train_loss_mask_dice": None,  # not a number: left out
            "train_class_error": 20.0,
        },
    ]
    outcome = TrainOutcome(2, None, False, ["a"], {"map_50_95": 0.1}, _last_record(history))
    metrics = StepMetrics("p", "train", gateway="")
    _record(metrics, outcome)
    losses = {
        dict(labels)["loss"]: value for labels, value in metrics.values()["rfdetr_loss"].items()
    }
    assert losses == {"loss": 4.0, "loss_ce": 1.5, "loss_bbox": 0.25, "loss_giou": 0.5}
