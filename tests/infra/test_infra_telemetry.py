"""Step metrics pushed to Debian's prometheus-pushgateway on 127.0.0.1 and read back over HTTP."""

from __future__ import annotations

import base64
import logging
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipelines.telemetry import StepMetrics


def _scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """{metric name: [(labels, value), ...]} of the rfdetr_* series at ``url``/metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("rfdetr_"):
                found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def _only(series: list[tuple[dict[str, str], float]], **labels: str) -> float:
    values = [v for found, v in series if all(found.get(k) == x for k, x in labels.items())]
    assert len(values) == 1, series
    return values[0]


def test_step_metrics_arrive_grouped_by_pipeline_and_step(pushgateway: str) -> None:
    metrics = StepMetrics("tele-train", "train", run_id="run-42", gateway=pushgateway)
    with metrics.observe_duration():
        metrics.set_epoch(3)
        metrics.set_images_per_second(41.5)
        metrics.set_losses({"loss": 1.25, "loss_bbox": 0.5})
        metrics.set_map({"map_50_95": 0.41, "map_50": 0.62})
    found = _scrape(pushgateway)
    group = {"job": "rfdetr", "pipeline": "tele-train", "step": "train"}
    assert _only(found["rfdetr_epoch"], **group) == 3
    assert _only(found["rfdetr_images_per_second"], **group) == 41.5
    assert _only(found["rfdetr_loss"], **group, loss="loss_bbox") == 0.5
    assert _only(found["rfdetr_eval_metric"], **group, metric="map_50_95") == 0.41
    assert _only(found["rfdetr_step_info"], **group, run_id="run-42") == 1
    assert _only(found["rfdetr_step_success"], **group) == 1
    assert 0 <= _only(found["rfdetr_step_duration_seconds"], **group) < 60
    assert _only(found["rfdetr_step_last_success_timestamp_seconds"], **group) > 1.6e9


def test_a_failing_step_pushes_its_failure_and_reraises(pushgateway: str) -> None:
    metrics = StepMetrics("tele-fail", "evaluate", gateway=pushgateway)
    with pytest.raises(RuntimeError, match="boom"), metrics.observe_duration():
        raise RuntimeError("boom")
    found = _scrape(pushgateway)
    group = {"pipeline": "tele-fail", "step": "evaluate"}
    assert _only(found["rfdetr_step_success"], **group) == 0
    assert _only(found["rfdetr_step_last_failure_timestamp_seconds"], **group) > 1.6e9
    assert not [
        s
        for s in found.get("rfdetr_step_last_success_timestamp_seconds", [])
        if s[0].get("pipeline") == "tele-fail"
    ]


def test_each_push_replaces_the_steps_group_only(pushgateway: str) -> None:
    first = StepMetrics("tele-group", "train", gateway=pushgateway)
    first.set_epoch(1)
    first.set_gauge("custom_figure", 7.0, "a figure only the first push has")
    assert first.push()
    other_step = StepMetrics("tele-group", "export", gateway=pushgateway)
    other_step.set_gauge("onnx_bytes", 1234, "exported model size")
    assert other_step.push()
    second = StepMetrics("tele-group", "train", gateway=pushgateway)
    second.set_epoch(2)
    assert second.push()
    found = _scrape(pushgateway)
    assert _only(found["rfdetr_epoch"], pipeline="tele-group", step="train") == 2
    assert not [
        s for s in found.get("rfdetr_custom_figure", []) if s[0]["pipeline"] == "tele-group"
    ]
    assert _only(found["rfdetr_onnx_bytes"], pipeline="tele-group", step="export") == 1234


def test_unset_gateway_is_a_logged_no_op(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("PUSHGATEWAY_URL", raising=False)
    metrics = StepMetrics("p", "s")
    with caplog.at_level(logging.DEBUG, logger="pipelines.telemetry"), metrics.observe_duration():
        metrics.set_epoch(1)
    assert metrics.push() is False
    assert "PUSHGATEWAY_URL not set" in caplog.text
    assert metrics.values()["rfdetr_epoch"] == {(): 1.0}


def test_push_failure_is_a_warning_not_an_error(
    closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = StepMetrics("p", "s", gateway=f"http://127.0.0.1:{closed_port}", timeout=2)
    with caplog.at_level(logging.WARNING, logger="pipelines.telemetry"), metrics.observe_duration():
        metrics.set_epoch(1)
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "pushing metrics of p/s" in caplog.text


def test_gateway_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, pushgateway: str
) -> None:
    monkeypatch.setenv("PUSHGATEWAY_URL", pushgateway)
    metrics = StepMetrics("tele-env", "fetch_dataset")
    metrics.set_gauge("objects_downloaded", 12, "objects fetched")
    assert metrics.push()
    assert _only(_scrape(pushgateway)["rfdetr_objects_downloaded"], step="fetch_dataset") == 12


def test_gauge_rules() -> None:
    metrics = StepMetrics("p", "s", gateway="")
    metrics.set_gauge("loss", float("nan"), labels={"loss": "total"})  # diverged: not recorded
    assert "rfdetr_loss" not in metrics.values()
    metrics.set_losses({"total": 1.0})
    with pytest.raises(ValueError, match="has labels"):
        metrics.set_gauge("loss", 1.0)
    with pytest.raises(ValueError, match="reserved label"):
        metrics.set_gauge("x", 1.0, labels={"step": "y"})
    with pytest.raises(ValueError, match="invalid Prometheus metric name"):
        metrics.set_gauge("bad-name", 1.0)


class _AuthRecorder(BaseHTTPRequestHandler):
    """Answers a push as the Pushgateway does (200) and keeps its ``Authorization`` header."""

    seen: list[str | None]

    def do_PUT(self) -> None:
        type(self).seen.append(self.headers.get("Authorization"))
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:  # keep pytest's output clean
        return None


@pytest.fixture
def auth_recorder() -> Iterator[tuple[str, list[str | None]]]:
    handler = type("Recorder", (_AuthRecorder,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize(
    ("user", "password", "sent"),
    [("ci", "s3cret", "ci:s3cret"), ("ci", None, "ci:"), (None, "unused", None)],
)
def test_basic_auth_comes_from_the_environment(
    auth_recorder: tuple[str, list[str | None]],
    monkeypatch: pytest.MonkeyPatch,
    user: str | None,
    password: str | None,
    sent: str | None,
) -> None:
    """``Authorization: Basic base64(user:password)`` (RFC 7617 section 2) only with a user."""
    url, seen = auth_recorder
    for name, value in (("PUSHGATEWAY_USERNAME", user), ("PUSHGATEWAY_PASSWORD", password)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    metrics = StepMetrics("tele-auth", "train", gateway=url)
    metrics.set_epoch(1)
    assert metrics.push()
    expected = None if sent is None else "Basic " + base64.b64encode(sent.encode()).decode()
    assert seen == [expected]
