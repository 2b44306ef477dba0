"""Publish a trained model to the object store (the ``publish`` step).

The layout of ``s3://<bucket>/<model-name>/`` and how one run alone writes a version (a claim
created once, ``latest.json`` moved by compare-and-swap once every file is verified) are in the
README ("Published to ..."); the servers that honour the conditional writes:
:mod:`rfdetr.storage.conditional`.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from pipelines.steps.common import StepError, plain_number, step_metrics
from rfdetr.storage import (
    MANIFEST_NAME,
    exists,
    parse_uri,
    read_manifest,
    upload_dir,
    write_manifest,
)
from rfdetr.storage.conditional import create_object, read_json_object, replace_object
from rfdetr.storage.errors import PreconditionFailedError
from rfdetr.storage.manifest import Manifest
from rfdetr.storage.uris import check_bucket_name
from rfdetr.utils.atomic import link_or_copy

logger = logging.getLogger(__name__)

LATEST = "latest.json"
MODEL_CARD = "model.json"
DECISION = "decision.json"  # local only: the artifact says why it holds nothing
REPORT_FILES = ("metrics.json", "report.md", "report.html")
CLAIMS = ".claims"
CAS_ATTEMPTS = 50
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class PublishDecision:
    """Whether to publish, and why (shown in the step's log and metadata)."""

    publish: bool
    reason: str
    current: dict[str, Any] | None = None


class PublishOutputs(NamedTuple):
    """The ``publish`` component's outputs. Not "published": a field named like an output
    artifact is declared as "published_2" by the compiler while the executor writes
    "published", and KFP's launcher then fails."""

    uri: str
    version: str
    was_published: bool


@dataclass(frozen=True)
class PublishResult:
    """What :func:`publish_model` did."""

    published: bool
    reason: str
    uri: str = ""
    version: str = ""
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256

    def metadata(self) -> dict[str, Any]:
        return {**asdict(self), "files": len(self.files)}

    def outputs(self) -> PublishOutputs:
        return PublishOutputs(self.uri, self.version, self.published)


def check_name(value: str, what: str) -> str:
    """``value`` when it is a safe object-key segment; a StepError naming ``what`` otherwise."""
    if not _NAME_RE.match(value):  # its first character excludes "." and ".."
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


def decide(
    map_50_95: float, min_map: float, require_improvement: bool, model_root: str
) -> PublishDecision:
    """Publish when mAP50:95 is at least ``min_map`` and, with ``require_improvement``, beats
    the published model's (:func:`improves`); a NaN or infinite figure never passes."""
    if plain_number(min_map) is None:
        raise StepError(f"min_map {min_map!r}: expected a finite number")
    if plain_number(map_50_95) is None:
        return PublishDecision(False, f"mAP50:95 {map_50_95!r} is not a finite number")
    if map_50_95 < min_map:
        return PublishDecision(False, f"mAP50:95 {map_50_95:.4f} is below min_map {min_map:.4f}")
    if not require_improvement:
        return PublishDecision(True, f"mAP50:95 {map_50_95:.4f} >= min_map {min_map:.4f}")
    found = read_json_object(parse_uri(model_root).child(LATEST))
    return improves(map_50_95, found[0] if found else None)


def improves(map_50_95: float, current: dict[str, Any] | None) -> PublishDecision:
    """Whether ``map_50_95`` beats the published model ``current`` (any model beats none)."""
    best = plain_number((current or {}).get("map_50_95"))
    if best is None:
        return PublishDecision(True, "no model published yet", current)
    if map_50_95 > best:
        reason = f"mAP50:95 {map_50_95:.4f} beats the published {best:.4f}"
        return PublishDecision(True, reason, current)
    version = (current or {}).get("version")
    reason = f"mAP50:95 {map_50_95:.4f} does not beat the published {best:.4f} ({version})"
    return PublishDecision(False, reason, current)


def claim_version(model_root: str, version: str, run_id: str) -> None:
    """Make this run the only writer of ``version``: create ``.claims/<version>.json`` once.

    Raises:
        StepError: another run claimed (or published) the version first.
    """
    claim = parse_uri(model_root).child(f"{CLAIMS}/{version}.json")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {"version": version, "run_id": run_id, "claimed": stamp, "token": uuid.uuid4().hex}
    manifest = parse_uri(model_root).child(f"{version}/{MANIFEST_NAME}")
    try:
        create_object(json.dumps(body).encode(), claim)
    except PreconditionFailedError:
        owner = (read_json_object(claim) or ({}, ""))[0]
        if run_id and owner.get("run_id") == run_id and not exists(manifest):
            # a retry of this run's publish step (KFP "Retry" keeps the run id): its own claim
            logger.warning("%s: resuming the unfinished publish of run %s", claim, run_id)
            return
        raise StepError(
            f"{model_root}/{version}: this version is published already (claimed by run "
            f"{owner.get('run_id') or '?'} at {owner.get('claimed') or '?'}); pick another version"
        ) from None
    if exists(manifest):  # published before claims existed
        raise StepError(f"{model_root}/{version}: this version is published already")


def promote(model_root: str, card: dict[str, Any], require_improvement: bool) -> PublishDecision:
    """Point ``latest.json`` at the ``card``'s version by compare-and-swap, re-checking the gate
    each try; returns its decision against the value replaced (``publish`` False: a better model
    was promoted meanwhile and stays)."""
    target = parse_uri(model_root).child(LATEST)
    pointer = {key: card[key] for key in ("version", "uri", "map_50_95")}
    data = json.dumps(pointer, indent=2).encode()
    for _ in range(CAS_ATTEMPTS):
        found = read_json_object(target)
        current = found[0] if found else None
        decision = improves(pointer["map_50_95"], current)
        if require_improvement and not decision.publish:
            stays = f"{pointer['uri']} was stored, but {LATEST} stays: {decision.reason}"
            return PublishDecision(False, stays, current)
        try:
            if found is None:
                create_object(data, target, probe=False)
            else:
                replace_object(data, target, found[1])
        except PreconditionFailedError:
            continue  # moved since read: read again and re-check
        return decision
    raise StepError(f"{target}: changed {CAS_ATTEMPTS} times while publishing; run again")


def upload_version(
    model_root: str, card: dict[str, Any], files: tuple[Path, Path, Path], staging: Path
) -> Manifest:
    """Claim ``card["version"]``, link the checkpoint, ONNX file and reports into ``staging``,
    upload it to ``card["uri"]`` and check the store's manifest against it."""
    claim_version(model_root, card["version"], card["run_id"])
    checkpoint, onnx, report_dir = files
    reports = [report_dir / name for name in REPORT_FILES if (report_dir / name).is_file()]
    for file in (checkpoint, onnx, *reports):
        link_or_copy(file, staging / file.name)
    for plot in sorted((report_dir / "plots").glob("*.png")):
        link_or_copy(plot, staging / "plots" / plot.name)
    (staging / MODEL_CARD).write_text(json.dumps(card, indent=2) + "\n")
    prefix = parse_uri(card["uri"])
    manifest = upload_dir(staging, prefix)
    write_manifest(manifest, staging / MANIFEST_NAME)  # the artifact shows it too
    remote = read_manifest(str(prefix))  # what a consumer will check against
    if remote.by_path() != manifest.by_path():
        raise StepError(f"{prefix}/{MANIFEST_NAME} differs from the files just uploaded")
    return manifest


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
    require_improvement: bool = True,
    run_id: str = "",
    extra: dict[str, Any] | None = None,
) -> PublishResult:
    """Upload the model to ``s3://<bucket>/<model_name>/<version>/`` when :func:`decide` allows
    (empty ``bucket``: off; ``model_name``: ``rfdetr-<model_size>``; ``version``:
    :func:`default_version`); ``staging`` gets the files, ``manifest.json`` and ``decision.json``.

    Raises:
        StepError: bad names, or the version exists already.
        StorageError: an upload or its verification failed.
    """
    staging.mkdir(parents=True, exist_ok=True)
    if not bucket:
        return _recorded(staging, PublishResult(False, "publishing is off (no bucket given)"))
    check_bucket_name(bucket, "publish bucket")
    model_name = check_name(model_name or f"rfdetr-{model_size or 'model'}", "model name")
    version = check_name(version or default_version(run_id), "version")
    model_root = f"s3://{bucket}/{model_name}"
    prefix = f"{model_root}/{version}"  # names checked above: as parse_uri would write it
    with step_metrics("publish", run_id) as metrics:
        decision = decide(map_50_95, min_map, require_improvement, model_root)
        metrics.set_gauge("published", float(decision.publish), "1 when the model was published")
        if not decision.publish:
            logger.info("not publishing %s: %s", prefix, decision.reason)
            return _recorded(staging, PublishResult(False, decision.reason, version=version))
        card = {
            "model_name": model_name,
            "version": version,
            "uri": prefix,
            "map_50_95": map_50_95,
            "published": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "run_id": run_id,
            "checkpoint": checkpoint.name,
            "onnx": onnx.name,
            "previous": (decision.current or {}).get("version"),
            **(extra or {}),
        }
        manifest = upload_version(model_root, card, (checkpoint, onnx, report_dir), staging)
        moved = promote(model_root, card, require_improvement)
        metrics.set_gauge("published_bytes", manifest.total_bytes, "Bytes published")
        if not moved.publish:
            logger.info("not promoting %s: %s", prefix, moved.reason)
            metrics.set_gauge("published", 0.0, "1 when the model was published")
            return _recorded(staging, PublishResult(False, moved.reason, version=version))
    logger.info("published %s (%d files, %s)", prefix, len(manifest.files), decision.reason)
    sha256 = {entry.path: entry.sha256 for entry in manifest.files}
    return _recorded(staging, PublishResult(True, decision.reason, prefix, version, sha256))


def _recorded(staging: Path, result: PublishResult) -> PublishResult:
    decision = {"published": result.published, "reason": result.reason, "uri": result.uri}
    (staging / DECISION).write_text(json.dumps(decision, indent=2) + "\n")
    return result
