"""Concurrent publishes against a real SeaweedFS: a version is written once, by one run, and
``latest.json`` moves only by compare-and-swap (issue 13, "Concurrency and integrity").

Eight processes start together (a barrier) and call :func:`publish_model`; each stages files of
its own random content, so the stored objects tell which run wrote them.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from pathlib import Path
from typing import Any

from pipelines.steps.publish import LATEST, publish_model
from rfdetr import storage

WRITERS = 8


def _stage_run(folder: Path, index: int, map_50_95: float) -> dict[str, Any]:
    """The inputs of one run: a checkpoint, an ONNX file and a report, all of its own bytes."""
    report = folder / "report"
    (report / "plots").mkdir(parents=True)
    (folder / "checkpoint_best_total.pth").write_bytes(os.urandom(40_000 + index))
    (folder / "rfdetr-nano.onnx").write_bytes(os.urandom(9_000 + index))
    (report / "metrics.json").write_text(json.dumps({"map_50_95": map_50_95, "run": index}))
    (report / "report.md").write_text(f"# run {index}\n")
    (report / "plots" / "pr.png").write_bytes(os.urandom(500 + index))
    return {
        "checkpoint": folder / "checkpoint_best_total.pth",
        "onnx": folder / "rfdetr-nano.onnx",
        "report_dir": report,
        "staging": folder / "staging",
        "map_50_95": map_50_95,
        "run_id": f"run{index}",
    }


def _publish_worker(barrier: Any, kwargs: dict[str, Any], queue: Any) -> None:
    barrier.wait(timeout=60)
    try:
        result = publish_model(**kwargs)
        queue.put({"run": kwargs["run_id"], "published": result.published, "error": ""})
    except Exception as exc:  # reported to the parent, which asserts on every outcome
        queue.put({"run": kwargs["run_id"], "published": False, "error": f"{exc}"})


def _race(tmp_path: Path, maps: list[float], **common: Any) -> list[dict[str, Any]]:
    ctx = multiprocessing.get_context("fork")
    barrier, queue = ctx.Barrier(len(maps)), ctx.Queue()
    runs = [{**_stage_run(tmp_path / f"run{i}", i, m), **common} for i, m in enumerate(maps)]
    procs = [ctx.Process(target=_publish_worker, args=(barrier, r, queue)) for r in runs]
    for proc in procs:
        proc.start()
    outcomes = [queue.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    return outcomes


def _stored_sha256(prefix: str, rel: str) -> str:
    return hashlib.sha256(storage.read_bytes(f"{prefix}/{rel}")).hexdigest()


def test_one_version_published_at_once_by_eight_runs_is_written_by_exactly_one(
    tmp_path: Path, bucket: str
) -> None:
    outcomes = _race(tmp_path, [0.5] * WRITERS, bucket=bucket, model_name="m", version="v1")
    winners = [o for o in outcomes if o["published"]]
    assert len(winners) == 1, outcomes
    refused = [o for o in outcomes if not o["published"]]
    assert len(refused) == WRITERS - 1
    for outcome in refused:
        assert "this version is published already" in outcome["error"], outcome
    # the stored version is exactly the winner's files: every object matches its manifest,
    # and that manifest is the one the winner staged locally
    winner = winners[0]["run"]
    local = json.loads((tmp_path / winner / "staging" / "manifest.json").read_text())
    remote = storage.read_manifest(f"s3://{bucket}/m/v1")
    assert {e.path: e.sha256 for e in remote.files} == {
        f["path"]: f["sha256"] for f in local["files"]
    }
    for entry in remote.files:
        assert _stored_sha256(f"s3://{bucket}/m/v1", entry.path) == entry.sha256, entry.path
    card = json.loads(storage.read_bytes(f"s3://{bucket}/m/v1/model.json"))
    assert card["run_id"] == winner
    latest = json.loads(storage.read_bytes(f"s3://{bucket}/m/{LATEST}"))
    assert latest["version"] == "v1"


def test_latest_ends_on_the_best_of_eight_concurrent_gated_runs(
    tmp_path: Path, bucket: str
) -> None:
    maps = [0.10, 0.90, 0.30, 0.50, 0.20, 0.70, 0.40, 0.60]
    outcomes = _race(tmp_path, maps, bucket=bucket, model_name="m", require_improvement=True)
    assert all(not o["error"] for o in outcomes), outcomes
    latest = json.loads(storage.read_bytes(f"s3://{bucket}/m/{LATEST}"))
    assert latest["map_50_95"] == max(maps)
    best_run = f"run{maps.index(max(maps))}"
    assert next(o for o in outcomes if o["run"] == best_run)["published"] is True
    card = json.loads(storage.read_bytes(f"{latest['uri']}/model.json"))
    assert card["run_id"] == best_run and card["map_50_95"] == max(maps)
