"""Fetch a dataset into the pipeline and validate it (the ``fetch_dataset`` and
``validate_dataset`` steps)."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.steps.common import StepError, step_metrics
from rfdetr.data.validation import DatasetReport, validate_dataset
from rfdetr.storage import download_prefix, is_object_uri

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FetchResult:
    """What :func:`fetch_dataset` copied: file count, bytes, and whether a manifest vouched."""

    source: str
    files: int
    total_bytes: int
    manifest_verified: bool

    def metadata(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "files": self.files,
            "bytes": self.total_bytes,
            "manifest_verified": self.manifest_verified,
        }


def fetch_dataset(source: str, dest: str | Path) -> FetchResult:
    """Copy the dataset at ``source`` into the folder ``dest``.

    Args:
        source: ``s3://bucket/prefix`` or ``minio://bucket/prefix`` (every object verified by
            size, ETag and sha256 metadata, and against the prefix's ``manifest.json`` when it
            has one; keys escaping the prefix are refused before anything is written), or a
            local folder (copied; symbolic links are kept as links so validation can refuse
            the ones that leave the dataset).
        dest: the folder to fill (created).

    Raises:
        StorageError: the store refused, a check failed, or a key is unsafe (one line).
        StepError: a local source that is not a folder.
    """
    with step_metrics("fetch_dataset") as metrics:
        target = Path(dest)
        if is_object_uri(source):
            result = download_prefix(source, target)
            fetched = FetchResult(
                source, len(result.files), result.total_bytes, result.manifest is not None
            )
        else:
            folder = Path(source).expanduser()
            if not folder.is_dir():
                raise StepError(
                    f"dataset {source!r}: not a folder, nor an s3:// or minio:// URI "
                    "(e.g. s3://datasets/shapes)"
                )
            shutil.copytree(folder, target, symlinks=True, dirs_exist_ok=True)
            files = [p for p in target.rglob("*") if p.is_file() and not p.is_symlink()]
            fetched = FetchResult(source, len(files), sum(p.stat().st_size for p in files), False)
        metrics.set_gauge("dataset_bytes", fetched.total_bytes, "Bytes fetched")
        metrics.set_gauge("dataset_files", fetched.files, "Files fetched")
    logger.info("fetched %s: %d files, %d bytes", source, fetched.files, fetched.total_bytes)
    return fetched


@dataclass(frozen=True)
class ValidationOutcome:
    """A validation's Markdown report, its counts, and the report object itself."""

    report: DatasetReport
    markdown: str
    counts: dict[str, float]


class DatasetInvalidError(StepError):
    """The dataset has errors; the message is the validation report."""


def _display(text: str, local_root: str, shown_root: str) -> str:
    """Paths under the fetched copy shown under the dataset's source URI instead."""
    return text.replace(local_root.rstrip(os.sep), shown_root.rstrip("/")) if shown_root else text


def validate_fetched(
    dataset_dir: str | Path, source: str = "", report_path: str | Path | None = None
) -> ValidationOutcome:
    """Validate the dataset folder; raise :class:`DatasetInvalidError` when it has errors.

    Args:
        dataset_dir: the fetched dataset.
        source: where it came from; file paths in the report are shown under it.
        report_path: where to write the Markdown report (written before any failure).

    Returns:
        The outcome (Markdown report and counts) when the dataset is usable (warnings allowed).

    Raises:
        DatasetInvalidError: the message is the text report (``rfdetr validate``'s), led by a
            one-line summary.
    """
    from rfdetr.cli import format_report

    local = str(dataset_dir)
    with step_metrics("validate_dataset") as metrics:
        report = validate_dataset(local, deep=True)  # decode as training will
        counts = report_counts(report)
        for name, value in counts.items():
            metrics.set_gauge(f"dataset_{name}", value, "Dataset validation counts")
        markdown = _display(report_markdown(report, source or local), local, source)
        if report_path is not None:
            Path(report_path).write_text(markdown)
        if not report.usable:
            text = _display("\n".join(format_report(report)), local, source)
            raise DatasetInvalidError(
                f"dataset {source or local} is not usable: {len(report.errors)} error(s)\n{text}"
            )
    return ValidationOutcome(report, markdown, counts)


def report_counts(report: DatasetReport) -> dict[str, float]:
    """Flat numbers for a ``Metrics`` artifact: images/annotations per split, classes, problems."""
    counts: dict[str, float] = {}
    for name, split in report.splits.items():
        counts[f"{name}_images"] = split.images
        counts[f"{name}_annotations"] = split.annotations
    counts["classes"] = report.class_map.num_classes if report.class_map else 0
    counts["errors"] = len(report.errors)
    counts["warnings"] = len(report.warnings)
    return counts


def report_markdown(report: DatasetReport, title: str) -> str:
    """The validation report as Markdown (rendered by the Kubeflow UI)."""
    verdict = "usable" if report.usable else "**NOT usable**"
    lines = [
        f"# Dataset validation: `{title}`",
        "",
        f"Format: **{report.format or 'not detected'}**; result: {verdict} "
        f"({len(report.errors)} error(s), {len(report.warnings)} warning(s)).",
        "",
    ]
    if report.splits:
        lines += ["| split | images | annotations | crowd |", "|---|---:|---:|---:|"]
        lines += [
            f"| {n} | {s.images} | {s.annotations} | {s.crowd} |" for n, s in report.splits.items()
        ]
        lines.append("")
    rows = report.class_rows()
    if rows:
        splits = list(report.splits)
        lines.append("| id | dataset id | class | " + " | ".join(splits) + " |")
        lines.append("|---:|---:|---|" + "---:|" * len(splits))
        for row in rows:
            counts = " | ".join(str(row["counts"][s]) for s in splits)
            lines.append(f"| {row['id']} | {row['source_id']} | {row['name']} | {counts} |")
        lines.append("")
    if report.problems:
        lines.append("## Problems")
        lines.append("")
        lines += [f"- **{p.severity}** `{p.path}`: {p.message}" for p in report.problems[:200]]
        if len(report.problems) > 200:
            lines.append(f"- ... and {len(report.problems) - 200} more")
    return "\n".join(lines) + "\n"
