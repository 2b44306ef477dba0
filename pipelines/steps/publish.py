"""Publish a trained model to the object store (the ``publish`` step).

Layout of ``s3://<bucket>/<model-name>/``::

    <version>/checkpoint_best_total.pth   stripped weights + config + class names + metrics
    <version>/rfdetr-<size>.onnx          verified ONNX file
    <version>/metrics.json, report.md, report.html, plots/*.png   the evaluation
    <version>/model.json                  what this version is (figures, classes, files, run)
    <version>/manifest.json               size and sha256 of every file above (written last)
    latest.json                           the current version: {"version", "uri", "map_50_95"}

A version is written once: publishing to an existing version fails. ``latest.json`` moves only
after every file of the new version was uploaded and verified.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipelines.steps.common import StepError, link_or_copy, plain_number, step_metrics
from rfdetr.storage import (
    MANIFEST_NAME,
    exists,
    parse_uri,
    read_bytes,
    read_manifest,
    upload_bytes,
    upload_dir,
    write_manifest,
)
from rfdetr.storage.errors import ObjectNotFoundError

logger = logging.getLogger(__name__)

LATEST = "latest.json"
MODEL_CARD = "model.json"
DECISION = "decision.json"  # local only: the artifact says why it holds nothing
REPORT_FILES = ("metrics.json", "report.md", "report.html")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class PublishDecision:
    """Whether to publish, and why (shown in the step's log and metadata)."""

    publish: bool
    reason: str
    current: dict[str, Any] | None = None


@dataclass(frozen=True)
class PublishResult:
    """What :func:`publish_model` did."""

    published: bool
    reason: str
    uri: str = ""
    version: str = ""
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256

    def metadata(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "reason": self.reason,
            "uri": self.uri,
            "version": self.version,
            "files": len(self.files),
        }


def check_name(value: str, what: str) -> str:
    """``value`` when it is a safe object-key segment; a StepError naming ``what`` otherwise."""
    if not _NAME_RE.match(value) or value in (".", ".."):
        raise StepError(
            f"{what} {value!r}: use 1-128 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return value


def default_version(run_id: str = "", now: datetime | None = None) -> str:
    """``YYYYMMDD-HHMMSS`` (UTC), plus the first 8 characters of the run id when known."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    suffix = re.sub(r"[^A-Za-z0-9]", "", run_id)[:8]
    return f"{stamp}-{suffix}" if suffix else stamp


def current_model(model_root: str) -> dict[str, Any] | None:
    """The ``latest.json`` under ``model_root`` (``s3://bucket/model-name``), or None."""
    try:
        data = json.loads(read_bytes(parse_uri(model_root).child(LATEST)))
    except ObjectNotFoundError:
        return None
    except ValueError as exc:
        raise StepError(f"{model_root}/{LATEST}: not valid JSON ({exc})") from None
    return data if isinstance(data, dict) else None


def decide(
    map_50_95: float, min_map: float, require_improvement: bool, model_root: str
) -> PublishDecision:
    """Publish when mAP50:95 is at least ``min_map`` and, with ``require_improvement``, higher
    than the published model's (any model beats none)."""
    if map_50_95 < min_map:
        return PublishDecision(False, f"mAP50:95 {map_50_95:.4f} is below min_map {min_map:.4f}")
    if not require_improvement:
        return PublishDecision(True, f"mAP50:95 {map_50_95:.4f} >= min_map {min_map:.4f}")
    current = current_model(model_root)
    best = plain_number((current or {}).get("map_50_95"))
    if best is None:
        return PublishDecision(True, "no model published yet", current)
    if map_50_95 > best:
        reason = f"mAP50:95 {map_50_95:.4f} beats the published {best:.4f}"
        return PublishDecision(True, reason, current)
    version = (current or {}).get("version")
    reason = f"mAP50:95 {map_50_95:.4f} does not beat the published {best:.4f} ({version})"
    return PublishDecision(False, reason, current)


def stage_files(
    checkpoint: Path, onnx: Path, report_dir: Path, staging: Path, card: dict[str, Any]
) -> Path:
    """Gather what is published into ``staging`` (hard links, no copies of big files)."""
    link_or_copy(checkpoint, staging / checkpoint.name)
    link_or_copy(onnx, staging / onnx.name)
    for name in REPORT_FILES:
        if (report_dir / name).is_file():
            link_or_copy(report_dir / name, staging / name)
    for plot in sorted((report_dir / "plots").glob("*.png")):
        link_or_copy(plot, staging / "plots" / plot.name)
    (staging / MODEL_CARD).write_text(json.dumps(card, indent=2) + "\n")
    return staging


def publish_model(
    checkpoint: Path,
    onnx: Path,
    report_dir: Path,
    staging: Path,
    *,
    bucket: str,
    model_name: str = "",
    model_size: str = "",
    version: str = "",
    map_50_95: float,
    min_map: float = 0.0,
    require_improvement: bool = False,
    run_id: str = "",
    extra: dict[str, Any] | None = None,
) -> PublishResult:
    """Upload the model to ``s3://<bucket>/<model_name>/<version>/`` when the gate allows.

    Args:
        checkpoint, onnx: the stripped checkpoint and the ONNX file.
        report_dir: the evaluation report folder.
        staging: an empty local folder; it ends up holding what was uploaded (with
            ``manifest.json``) and ``decision.json`` (published or not, and why).
        bucket: destination bucket; empty: publishing is off (the result says so).
        model_name, version: key segments; an empty name is ``rfdetr-<model_size>``, an empty
            version :func:`default_version`.
        model_size: the preset name, for the default model name.
        map_50_95: the evaluation figure the gate compares.
        min_map, require_improvement: see :func:`decide`.
        run_id: the pipeline run, recorded in ``model.json``.
        extra: more facts for ``model.json`` (classes, dataset, split...).

    Raises:
        StepError: bad names, or the version exists already.
        StorageError: an upload or its verification failed.
    """
    staging.mkdir(parents=True, exist_ok=True)
    result = _publish(
        checkpoint,
        onnx,
        report_dir,
        staging,
        bucket=bucket,
        model_name=model_name or f"rfdetr-{model_size or 'model'}",
        version=version,
        map_50_95=map_50_95,
        min_map=min_map,
        require_improvement=require_improvement,
        run_id=run_id,
        extra=extra,
    )
    decision = {"published": result.published, "reason": result.reason, "uri": result.uri}
    (staging / DECISION).write_text(json.dumps(decision, indent=2) + "\n")
    return result


def _publish(
    checkpoint: Path,
    onnx: Path,
    report_dir: Path,
    staging: Path,
    *,
    bucket: str,
    model_name: str,
    version: str,
    map_50_95: float,
    min_map: float,
    require_improvement: bool,
    run_id: str,
    extra: dict[str, Any] | None,
) -> PublishResult:
    if not bucket:
        return PublishResult(False, "publishing is off (no bucket given)")
    check_name(model_name, "model name")
    version = check_name(version or default_version(run_id), "version")
    model_root = f"s3://{bucket}/{model_name}"
    prefix = parse_uri(f"{model_root}/{version}")
    with step_metrics("publish", run_id) as metrics:
        decision = decide(map_50_95, min_map, require_improvement, model_root)
        metrics.set_gauge("published", float(decision.publish), "1 when the model was published")
        if not decision.publish:
            logger.info("not publishing %s: %s", prefix, decision.reason)
            return PublishResult(False, decision.reason, version=version)
        if exists(prefix.child(MANIFEST_NAME)):
            raise StepError(f"{prefix}: this version is published already; pick another version")
        card = {
            "model_name": model_name,
            "version": version,
            "uri": str(prefix),
            "map_50_95": map_50_95,
            "published": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "run_id": run_id,
            "checkpoint": checkpoint.name,
            "onnx": onnx.name,
            "previous": (decision.current or {}).get("version"),
            **(extra or {}),
        }
        stage_files(checkpoint, onnx, report_dir, staging, card)
        manifest = upload_dir(staging, prefix)
        write_manifest(manifest, staging / MANIFEST_NAME)  # the artifact shows it too
        remote = read_manifest(str(prefix))  # what a consumer will check against
        if remote.by_path() != manifest.by_path():
            raise StepError(f"{prefix}/{MANIFEST_NAME} differs from the files just uploaded")
        pointer = {"version": version, "uri": str(prefix), "map_50_95": map_50_95}
        upload_bytes(json.dumps(pointer, indent=2).encode(), parse_uri(model_root).child(LATEST))
        metrics.set_gauge("published_bytes", manifest.total_bytes, "Bytes published")
    logger.info("published %s (%d files, %s)", prefix, len(manifest.files), decision.reason)
    return PublishResult(
        True,
        decision.reason,
        str(prefix),
        version,
        {entry.path: entry.sha256 for entry in manifest.files},
    )
