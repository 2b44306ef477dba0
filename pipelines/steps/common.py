"""Shared pieces of the pipeline steps: names, telemetry, one-line step errors."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipelines.telemetry import StepMetrics
from rfdetr.errors import UserError, message

logger = logging.getLogger(__name__)

PIPELINE_NAME = "rfdetr-training"


class StepError(UserError, RuntimeError):
    """A step cannot go on; the message says what is wrong and what to do (shown in the UI)."""


@contextmanager
def step_metrics(step: str, run_id: str | None = None) -> Iterator[StepMetrics]:
    """Time the block as pipeline step ``step`` and push its metrics at the end (with
    ``PUSHGATEWAY_URL``, never failing the step: :mod:`pipelines.telemetry`)."""
    metrics = StepMetrics(PIPELINE_NAME, step, run_id=run_id or None)
    with metrics.observe_duration():
        yield metrics


def plain_number(value: Any) -> float | None:
    """``value`` as a float when it is a finite real number (metadata must be plain data)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def single_file(folder: str | Path, pattern: str, what: str) -> Path:
    """The one file matching ``pattern`` in ``folder``; a StepError naming the folder otherwise."""
    matches = sorted(Path(folder).glob(pattern))
    if len(matches) != 1:
        found = ", ".join(p.name for p in matches) or "nothing"
        raise StepError(f"{folder}: expected one {what} ({pattern}), found {found}")
    return matches[0]


@contextmanager
def step_errors(step: str) -> Iterator[None]:
    """Set up logging for a component; a :class:`~rfdetr.errors.UserError` exits with
    ``<step>: error: <message>`` and status 1 (the Kubeflow UI shows it, not a traceback), any
    other exception propagates (a bug to report)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        yield
    except UserError as exc:
        logger.debug("%s failed", step, exc_info=True)
        raise SystemExit(f"{step}: error: {message(exc)}") from None
