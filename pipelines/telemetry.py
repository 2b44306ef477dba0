"""Prometheus metrics of pipeline steps, pushed to a Pushgateway when ``PUSHGATEWAY_URL`` is set.

``PUSHGATEWAY_USERNAME`` / ``PUSHGATEWAY_PASSWORD`` add basic auth. Unset, nothing is pushed and
``prometheus_client`` is never imported; a failed push is a warning, never a failed step. Each
push replaces the group ``job="rfdetr", pipeline, step`` (not the run id: the Pushgateway never
expires groups); the run id is the ``run_id`` label of ``rfdetr_step_info``. Gauges:

- ``rfdetr_step_duration_seconds``: wall time of the last ``observe_duration`` block;
- ``rfdetr_step_last_{success,failure}_timestamp_seconds``, ``rfdetr_step_success`` (1 or 0);
- ``rfdetr_epoch``, ``rfdetr_images_per_second``: training progress and throughput;
- ``rfdetr_loss{loss="..."}`` (``set_losses``), ``rfdetr_eval_metric{metric="..."}`` (``set_map``).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)

PUSHGATEWAY_ENV = "PUSHGATEWAY_URL"
JOB = "rfdetr"
PREFIX = "rfdetr_"
_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_Series = dict[tuple[tuple[str, str], ...], float]  # {((label, value), ...): value}


class StepMetrics:
    """Gauges of one pipeline step, plain Python until pushed; thread-safe. ``gateway`` defaults
    to ``$PUSHGATEWAY_URL``; ``gateway=""`` turns pushing off."""

    def __init__(
        self,
        pipeline: str,
        step: str,
        *,
        run_id: str | None = None,
        gateway: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        if not pipeline or not step:
            raise ValueError("StepMetrics needs a pipeline and a step name")
        self.pipeline, self.step, self.run_id = pipeline, step, run_id
        self.gateway = os.environ.get(PUSHGATEWAY_ENV, "").strip() if gateway is None else gateway
        self.timeout = timeout
        self._lock = threading.Lock()
        self._gauges: dict[str, tuple[str, tuple[str, ...], _Series]] = {}  # (help, labels, series)
        if run_id:
            self.set_gauge(
                "step_info", 1.0, "Run that last pushed this step", labels={"run_id": run_id}
            )

    def set_gauge(
        self, name: str, value: float, help: str = "", labels: Mapping[str, str] | None = None
    ) -> None:
        """Set gauge ``rfdetr_<name>`` (prefix added when missing) to ``value``.

        One metric name always takes the same label names; NaN and infinite values are skipped
        (a diverged loss is logged, not pushed as a poisoned series).
        """
        full = name if name.startswith(PREFIX) else PREFIX + name
        if not _NAME_RE.match(full):
            raise ValueError(f"invalid Prometheus metric name {full!r}")
        labels = dict(labels or {})
        keys = tuple(sorted(labels))
        for key in keys:
            if not _LABEL_RE.match(key) or key in ("job", "pipeline", "step"):
                raise ValueError(f"metric {full}: invalid or reserved label name {key!r}")
        value = float(value)
        if not math.isfinite(value):
            logger.debug("metric %s%s is %s; not recorded", full, labels, value)
            return
        with self._lock:
            _, known, series = self._gauges.setdefault(full, (help or full, keys, {}))
            if known != keys:
                raise ValueError(f"metric {full} has labels {list(known)}, not {list(keys)}")
            series[tuple(sorted(labels.items()))] = value

    def set_epoch(self, epoch: int) -> None:
        self.set_gauge("epoch", epoch, "Last finished training epoch")

    def set_images_per_second(self, value: float) -> None:
        self.set_gauge("images_per_second", value, "Training or evaluation throughput")

    def set_losses(self, losses: Mapping[str, float]) -> None:
        for name, value in losses.items():
            self.set_gauge("loss", value, "Loss terms of the last epoch", labels={"loss": name})

    def set_map(self, metrics: Mapping[str, float]) -> None:
        """COCO figures (``map_50_95``, ``map_50``, ``ar_100``, ...), as ``rfdetr_eval_metric``."""
        for name, value in metrics.items():
            self.set_gauge("eval_metric", value, "COCO evaluation metrics", labels={"metric": name})

    def values(self) -> dict[str, _Series]:
        """A snapshot: {metric name: {((label, value), ...): value}}."""
        with self._lock:
            return {name: dict(series) for name, (_, _, series) in self._gauges.items()}

    @contextmanager
    def observe_duration(self) -> Iterator[StepMetrics]:
        """Time the block; record success or failure time; push at the end (even on failure)."""
        start, outcome = time.monotonic(), "failure"
        try:
            yield self
            outcome = "success"
        finally:
            stamp = f"step_last_{outcome}_timestamp_seconds"
            self.set_gauge(stamp, time.time(), f"Last {outcome} (Unix)")
            self.set_gauge(
                "step_success", outcome == "success", "1 when the last attempt succeeded"
            )
            self.set_gauge("step_duration_seconds", time.monotonic() - start, "Step wall time")
            self.push()

    def collect(self) -> Iterator[Any]:
        """The current values as ``prometheus_client`` gauge families (the collector protocol)."""
        from prometheus_client.core import GaugeMetricFamily

        with self._lock:
            gauges = {n: (h, k, dict(s)) for n, (h, k, s) in self._gauges.items()}
        for name, (help_text, keys, series) in sorted(gauges.items()):
            family = GaugeMetricFamily(name, help_text, labels=list(keys))
            for pairs, value in series.items():
                family.add_metric([label_value for _, label_value in pairs], value)
            yield family

    def push(self) -> bool:
        """Replace this step's group on the Pushgateway; False when skipped or failed (logged)."""
        group = f"{self.pipeline}/{self.step}"
        if not self.gateway:
            logger.debug("%s not set; metrics of %s not pushed", PUSHGATEWAY_ENV, group)
            return False
        try:
            from prometheus_client import CollectorRegistry, push_to_gateway
            from prometheus_client.exposition import basic_auth_handler
        except ImportError:
            logger.warning(
                "%s is set but prometheus-client is not installed; metrics not pushed",
                PUSHGATEWAY_ENV,
            )
            return False
        registry = CollectorRegistry()
        registry.register(self)
        user = os.environ.get("PUSHGATEWAY_USERNAME") or None  # None: no basic auth header
        password = os.environ.get("PUSHGATEWAY_PASSWORD") or ""
        auth = functools.partial(basic_auth_handler, username=user, password=password)
        try:
            push_to_gateway(
                self.gateway,
                job=JOB,
                registry=registry,
                grouping_key={"pipeline": self.pipeline, "step": self.step},
                timeout=self.timeout,
                handler=auth,
            )
        except Exception as exc:  # any network or HTTP failure: metrics must never fail a step
            logger.warning("pushing metrics of %s to %s failed: %s", group, self.gateway, exc)
            return False
        logger.debug("pushed metrics of %s to %s", group, self.gateway)
        return True
