"""The ``fetch_dataset`` and ``validate_dataset`` steps."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.steps.common import StepError, step_metrics
from rfdetr.data.validation import DatasetReport, validate_dataset
from rfdetr.storage import is_object_uri
from rfdetr.storage.reference import PrefixReference, download_reference, pin_prefix
from rfdetr.utils.atomic import write_atomic

logger = logging.getLogger(__name__)

REFERENCE_FILE = "dataset-reference.json"


@dataclass(frozen=True)
class FetchResult:
    """What :func:`fetch_dataset` passed on: a reference (object store) or a copy (a folder)."""

    source: str
    files: int
    total_bytes: int
    manifest_sha256: str = ""

    def metadata(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "files": self.files,
            "bytes": self.total_bytes,
            "by_reference": bool(self.manifest_sha256),
            "manifest_sha256": self.manifest_sha256,
            "manifest_verified": bool(self.manifest_sha256),
        }


def fetch_dataset(source: str, dest: str | Path) -> FetchResult:
    """Pass the dataset at ``source`` on to the next steps in the folder ``dest``: an object-store
    prefix as :data:`REFERENCE_FILE` (:func:`~rfdetr.storage.reference.pin_prefix`), a local
    folder as a copy (symbolic links kept, so validation can refuse those leaving the dataset).

    Raises:
        StorageError: the store refused, no manifest, a listing that does not match it, or an
            unsafe key (one line).
        StepError: a local source that is not a folder.
    """
    with step_metrics("fetch_dataset") as metrics:
        target = Path(dest)
        if is_object_uri(source):
            ref = pin_prefix(source)
            write_atomic(target / REFERENCE_FILE, ref.to_json().encode())
            fetched = FetchResult(source, ref.files, ref.total_bytes, ref.manifest_sha256)
        else:
            folder = Path(source).expanduser()
            if not folder.is_dir():
                raise StepError(
                    f"dataset {source!r}: not a folder, nor an s3:// or minio:// URI "
                    "(e.g. s3://datasets/shapes)"
                )
            shutil.copytree(folder, target, symlinks=True, dirs_exist_ok=True)
            files = [p for p in target.rglob("*") if p.is_file() and not p.is_symlink()]
            fetched = FetchResult(source, len(files), sum(p.stat().st_size for p in files))
        metrics.set_gauge("dataset_bytes", fetched.total_bytes, "Bytes of the dataset")
        metrics.set_gauge("dataset_files", fetched.files, "Files of the dataset")
    how = "pinned by reference" if fetched.manifest_sha256 else "copied"
    logger.info("%s %s: %d files, %d bytes", how, source, fetched.files, fetched.total_bytes)
    return fetched


def dataset_reference(dataset_dir: str | Path) -> PrefixReference | None:
    """The reference :func:`fetch_dataset` left in ``dataset_dir``, or None for a copy."""
    file = Path(dataset_dir) / REFERENCE_FILE
    if not file.is_file() or len(list(Path(dataset_dir).iterdir())) != 1:
        return None
    return PrefixReference.from_json(file.read_text(encoding="utf-8"), str(file))


@contextlib.contextmanager
def dataset_folder(dataset_dir: str | Path) -> Iterator[Path]:
    """The fetched dataset as a local folder for the block: a reference downloaded into a
    temporary folder, a copy where it is."""
    ref = dataset_reference(dataset_dir)
    if ref is None:
        yield Path(dataset_dir)
        return
    with tempfile.TemporaryDirectory(prefix="rfdetr-dataset-") as tmp:
        result = download_reference(ref, tmp)
        logger.info(
            "downloaded %s: %d files, %d bytes", ref.uri, len(result.files), result.total_bytes
        )
        yield Path(tmp)


@dataclass(frozen=True)
class ValidationOutcome:
    """A validation's report and its counts."""

    report: DatasetReport
    counts: dict[str, float]


class DatasetInvalidError(StepError):
    """The dataset has errors; the message is the validation report."""


def _display(text: str, local_root: str, shown_root: str) -> str:
    return text.replace(local_root.rstrip(os.sep), shown_root.rstrip("/")) if shown_root else text


def validate_fetched(
    dataset_dir: str | Path, source: str = "", report_path: str | Path | None = None
) -> ValidationOutcome:
    """Validate the fetched dataset; the outcome when it is usable (warnings allowed). Paths in
    the report are shown under ``source``; the Markdown report goes to ``report_path`` first.

    Raises:
        DatasetInvalidError: the message is the text report (``rfdetr validate``'s), led by a
            one-line summary.
    """
    from rfdetr.cli import format_report

    with step_metrics("validate_dataset") as metrics, dataset_folder(dataset_dir) as folder:
        local = str(folder)
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
    return ValidationOutcome(report, counts)


def report_counts(report: DatasetReport) -> dict[str, float]:
    """Flat numbers for a ``Metrics`` artifact: images/annotations per split, classes, problems."""
    counts: dict[str, float] = {
        f"{name}_{key}": getattr(split, key)
        for name, split in report.splits.items()
        for key in ("images", "annotations")
    }
    counts["classes"] = report.class_map.num_classes if report.class_map else 0
    return counts | {"errors": len(report.errors), "warnings": len(report.warnings)}


def report_markdown(report: DatasetReport, title: str) -> str:
    """The validation report as Markdown (rendered by the Kubeflow UI); every dataset-given
    string (title, class names, paths, messages) is escaped, so no HTML or Markdown gets through."""
    from rfdetr.evaluation.report import md_text

    verdict = "usable" if report.usable else "**NOT usable**"
    lines = [
        f"# Dataset validation: {md_text(title)}",
        "",
        f"Format: **{md_text(report.format or 'not detected')}**; result: {verdict} "
        f"({len(report.errors)} error(s), {len(report.warnings)} warning(s)).",
        "",
    ]
    if report.splits:
        lines += ["| split | images | annotations | crowd |", "|---|---:|---:|---:|"]
        lines += [
            f"| {md_text(n)} | {s.images} | {s.annotations} | {s.crowd} |"
            for n, s in report.splits.items()
        ]
        lines.append("")
    rows = report.class_rows()
    if rows:
        splits = list(report.splits)
        lines.append("| id | dataset id | class | " + " | ".join(map(md_text, splits)) + " |")
        lines.append("|---:|---:|---|" + "---:|" * len(splits))
        for row in rows:
            counts = " | ".join(str(row["counts"][s]) for s in splits)
            name, source_id = md_text(row["name"]), md_text(row["source_id"])
            lines.append(f"| {row['id']} | {source_id} | {name} | {counts} |")
        lines.append("")
    if report.problems:
        lines += ["## Problems", ""]
        lines += [
            f"- **{p.severity}** {md_text(p.path)}: {md_text(p.message)}"
            for p in report.problems[:200]
        ]
        if len(report.problems) > 200:
            lines.append(f"- ... and {len(report.problems) - 200} more")
    return "\n".join(lines) + "\n"
