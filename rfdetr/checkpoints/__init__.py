"""Checkpoints: the one home of our checkpoint files (:mod:`.files`, the only writer) and of
reading any checkpoint, ours or upstream's (:mod:`.reader`)."""

from rfdetr.checkpoints.files import (
    BEST_EMA,
    BEST_REGULAR,
    BEST_TOTAL,
    LAST,
    atomic_save,
    link_checkpoint,
    load_training_checkpoint,
    periodic_name,
    remove_stale_temporaries,
    save_checkpoint,
    save_training_checkpoint,
    select_best,
    strip_checkpoint,
)
from rfdetr.checkpoints.formats import CheckpointError
from rfdetr.checkpoints.reader import LoadedCheckpoint, load_model, load_weights, read_checkpoint

__all__ = [
    "BEST_EMA",
    "BEST_REGULAR",
    "BEST_TOTAL",
    "LAST",
    "CheckpointError",
    "LoadedCheckpoint",
    "atomic_save",
    "link_checkpoint",
    "load_model",
    "load_training_checkpoint",
    "load_weights",
    "periodic_name",
    "read_checkpoint",
    "remove_stale_temporaries",
    "save_checkpoint",
    "save_training_checkpoint",
    "select_best",
    "strip_checkpoint",
]
