"""Early stopping and the best-so-far validation mAP50:95 of the trained and EMA models, as
upstream."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class EarlyStopping:
    """Stops after ``patience`` epochs in which ``max(regular, EMA)`` (the EMA alone with
    ``use_ema``) did not exceed ``best`` by more than ``min_delta``."""

    patience: int
    min_delta: float
    use_ema: bool = False
    best: float | None = None
    bad_epochs: int = 0

    def update(self, regular: float | None, ema: float | None) -> bool:
        """Record one epoch's mAPs; True when training should stop."""
        candidates = [ema] if self.use_ema and ema is not None else [regular, ema]
        values = [v for v in candidates if v is not None]
        if not values:
            return False
        current = max(values)
        if self.best is None or current > self.best + self.min_delta:
            self.best, self.bad_epochs = current, 0
            return False
        self.bad_epochs += 1
        logger.info(
            "early stopping: no improvement over %.4f for %d of %d epochs",
            self.best,
            self.bad_epochs,
            self.patience,
        )
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the counters; patience and margin stay the configured ones."""
        self.best = state.get("best")
        self.bad_epochs = int(state.get("bad_epochs", 0))


@dataclass
class BestTracker:
    """Best scores so far of the ``regular`` and EMA models; ``total``: the source of
    ``checkpoint_best_total.pth``."""

    regular: float | None = None
    regular_epoch: int | None = None
    ema: float | None = None
    ema_epoch: int | None = None
    total: str | None = None

    def improve(self, source: str, score: float, epoch: int) -> bool:
        """Record ``score``; True when it beats the best of ``source`` (or is the first)."""
        best = getattr(self, source)
        if best is not None and not score > best:
            return False
        setattr(self, source, score)
        setattr(self, f"{source}_epoch", epoch)
        return True

    def winner(self) -> str:
        """``ema`` when its best is strictly higher than the regular best, else ``regular``."""
        if self.ema is not None and (self.regular is None or self.ema > self.regular):
            return "ema"
        return "regular"

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)
