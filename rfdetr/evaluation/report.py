"""The evaluation report: ``metrics.json``, ``report.md``, ``plots/*.png`` and ``report.html``
(one file: charts and samples embedded as base64 ``data:`` URIs).

``report.md`` is shown by the Kubeflow UI's Markdown viewer (markdown-to-jsx; kubeflow/pipelines
``frontend/src/components/viewers/MarkdownViewer.tsx``), where a relative image link has nothing
to resolve against: its charts are ``data:image/png`` URIs too (the sanitizer keeps
``data:image``), as many as fit in 400,000 characters; every dataset value is escaped as text.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

from rfdetr.evaluation import plots
from rfdetr.evaluation.coco import COCO_STATS, EvaluationResult
from rfdetr.evaluation.samples import MAX_DRAWN, SampleImage

logger = logging.getLogger(__name__)

_CHARTS = (
    ("per_class_ap", "Per-class AP", plots.per_class_ap_chart),
    ("pr_curves", "Precision-recall curves", plots.pr_curves_chart),
    ("f1_confidence", "F1 versus confidence", plots.f1_confidence_chart),
    ("confusion_matrix", "Confusion matrix", plots.confusion_matrix_chart),
)


KFP_MARKDOWN_LIMIT = 50 * 1000 * 8  # MarkdownViewer.tsx MAX_MARKDOWN_STR_LENGTH: cut beyond
_MD_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~$#!])")


def md_text(value: object) -> str:
    """``value`` as literal Markdown text: one line, HTML-escaped, Markdown syntax escaped."""
    text = _MD_CONTROL.sub(" ", str(value))
    return _MD_SPECIAL.sub(r"\\\1", escape(text, quote=False))


def fmt(value: float | None) -> str:
    """A metric for a table: 3 decimals, ``n/a`` for -1 (nothing to score) or None."""
    return "n/a" if value is None or value < 0 else f"{value:.3f}"


def write_report(
    result: EvaluationResult,
    output_dir: str | Path,
    *,
    samples: list[SampleImage] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``metrics.json``, ``report.md``, ``report.html`` and ``plots/*.png`` into
    ``output_dir`` (created): ``meta`` (model, dataset, split...) at the top and in
    ``metrics.json``, ``samples`` in the HTML page.

    Returns:
        ``{"metrics": ..., "markdown": ..., "html": ..., <chart name>: ...}`` paths.
    """
    out = Path(output_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    charts = [(key, title, draw(result)) for key, title, draw in _CHARTS]
    paths = {key: out / "plots" / f"{key}.png" for key, _, _ in charts}
    for key, _, png in charts:
        paths[key].write_bytes(png)
    paths["metrics"] = out / "metrics.json"
    data = result.to_dict()
    for entry in data["per_class"]:  # a class's AP null where COCO reports -1 (no ground truth)
        for key in ("ap_50_95", "ap_50", "mask_ap_50_95", "mask_ap_50"):
            if isinstance(entry.get(key), float) and entry[key] < 0:
                entry[key] = None
    paths["metrics"].write_text(json.dumps({"meta": meta, **data}, indent=2))
    paths["markdown"] = out / "report.md"
    paths["markdown"].write_text(markdown_report(result, meta, charts))
    paths["html"] = out / "report.html"
    paths["html"].write_text(html_report(result, meta, charts, samples or []), encoding="utf-8")
    logger.info("evaluation report written to %s", paths["html"])
    return paths


def _summary_table(result: EvaluationResult) -> list[list[str]]:
    columns = [("box", result.bbox)] + ([("mask", result.segm)] if result.segm is not None else [])
    rows = [
        [label, *(fmt(getattr(m, key)) for _, m in columns)]
        for key, (label, _) in COCO_STATS.items()
    ]
    return [["metric", *(name for name, _ in columns)], *rows]


def markdown_report(
    result: EvaluationResult,
    meta: Mapping[str, Any],
    charts: list[tuple[str, str, bytes]] | None = None,
) -> str:
    """The summary and per-class tables in Markdown, then ``charts`` (key, title, PNG) inline."""
    lines = ["# Evaluation report", ""]
    lines += [f"- **{md_text(k)}**: {md_text(v)}" for k, v in meta.items()]
    lines += [
        f"- **images**: {result.num_images}, **max detections per image**: {result.max_dets}",
        f"- **confidence threshold** (max macro F1, IoU 0.5, {result.iou_type}): "
        f"{result.confidence_threshold:.2f} -> precision {result.precision:.3f}, "
        f"recall {result.recall:.3f}, F1 {result.f1:.3f}",
        "",
        "## COCO metrics",
        "",
        *_md_table(_summary_table(result)),
        "",
        "## Per class",
        "",
    ]
    classes = [[md_text(cell) for cell in _class_cells(result, c)] for c in result.per_class]
    lines += _md_table([_class_header(result), *classes], left=2)
    labels = [md_text(n) for n in result.class_names] + ["background"]
    lines += [
        "",
        f"## Confusion matrix (confidence {result.confidence_threshold:.2f}, IoU 0.5)",
        "",
    ]
    rows = zip(labels, result.confusion_matrix, strict=True)
    lines += _md_table([["true \\ predicted", *labels], *([k, *map(str, r)] for k, r in rows)])
    lines += ["", "## Charts", ""]
    return _with_charts("\n".join(lines), charts or [])


def _md_table(table: list[list[str]], left: int = 0) -> list[str]:
    """Header, rule and rows; column ``left`` is left-aligned, the others right-aligned."""
    head, *rows = table
    rule = "|" + "|".join("---" if i == left else "---:" for i in range(len(head))) + "|"
    return ["| " + " | ".join(head) + " |", rule, *("| " + " | ".join(r) + " |" for r in rows)]


def _with_charts(text: str, charts: list[tuple[str, str, bytes]]) -> str:
    """``text`` plus each chart as a data URI while the whole fits the KFP viewer's limit."""
    parts = [text]
    used = len(text) + 1
    for key, title, png in charts:
        image = f"![{md_text(title)}]({_data_uri(png)})\n"
        if used + len(image) + 200 * len(charts) > KFP_MARKDOWN_LIMIT:
            image = (
                f"*{md_text(title)}: too large to show here; see report.html or plots/{key}.png*\n"
            )
        parts.append(image)
        used += len(image)
    return "\n".join(parts) + "\n"


def _class_header(result: EvaluationResult) -> list[str]:
    head = ["id", "dataset id", "name", "objects", "box AP50:95", "box AP50"]
    if result.segm is not None:
        head += ["mask AP50:95", "mask AP50"]
    return [*head, "precision", "recall", "F1"]


def _class_cells(result: EvaluationResult, c: Any) -> list[str]:
    cells = [str(c.class_id), str(c.category_id), c.name, str(c.num_gt)]
    cells += [fmt(c.ap_50_95), fmt(c.ap_50)]
    if result.segm is not None:
        cells += [fmt(c.mask_ap_50_95), fmt(c.mask_ap_50)]
    if c.num_gt == 0:
        return cells + ["n/a"] * 3
    return [*cells, fmt(c.precision), fmt(c.recall), fmt(c.f1)]


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def html_report(
    result: EvaluationResult,
    meta: Mapping[str, Any],
    charts: list[tuple[str, str, bytes]],
    samples: list[SampleImage],
) -> str:
    """The self-contained HTML page (inline CSS, images as data URIs, no scripts)."""
    head, *rows = _summary_table(result)
    class_rows = [_row(_class_cells(result, c), name_column=2) for c in result.per_class]
    meta_rows = [*((str(k), str(v)) for k, v in meta.items()), ("images", str(result.num_images))]
    meta_rows.append(("COCO backend", f"{result.backend}, maxDets {result.max_dets}"))
    return _PAGE.format(
        cards=_cards_html(result),
        meta="".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in meta_rows),
        summary=_row(head, "th", name_column=0) + "".join(_row(row, name_column=0) for row in rows),
        per_class=_row(_class_header(result), "th", name_column=2) + "".join(class_rows),
        charts="".join(_figure_html(title, png, "chart") for _, title, png in charts),
        samples=_samples_html(result, samples),
        iou_type=result.iou_type,
        threshold=f"{result.confidence_threshold:.2f}",
    )


def _cards_html(result: EvaluationResult) -> str:
    primary = result.primary
    kind = "mask" if result.segm is not None else "box"
    cards = [
        (f"{kind} mAP 50:95", fmt(primary.map_50_95)),
        (f"{kind} mAP 50", fmt(primary.map_50)),
        ("best confidence", f"{result.confidence_threshold:.2f}"),
        ("precision", fmt(result.precision)),
        ("recall", fmt(result.recall)),
        ("F1", fmt(result.f1)),
    ]
    return "".join(
        f'<div class="card"><div class="value">{v}</div><div class="label">{escape(k)}</div></div>'
        for k, v in cards
    )


def _row(cells: list[str], tag: str = "td", name_column: int | None = None) -> str:
    kind = ["name" if i == name_column else "num" for i in range(len(cells))]
    inner = "".join(f'<{tag} class="{kind[i]}">{escape(v)}</{tag}>' for i, v in enumerate(cells))
    return f"<tr>{inner}</tr>"


def _figure_html(caption: str, png: bytes, kind: str) -> str:
    return (
        f'<figure class="{kind}"><img alt="{escape(caption)}" src="{_data_uri(png)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _samples_html(result: EvaluationResult, samples: list[SampleImage]) -> str:
    if not samples:
        return ""
    figures = "".join(
        _figure_html(
            f"{s.file_name}: {s.num_gt} objects, {s.num_predicted} predicted", s.png, "sample"
        )
        for s in samples
    )
    return (
        "<h2>Sample images</h2><p class='note'>Left: ground truth. Right: predictions scoring at "
        f"least {result.confidence_threshold:.2f} (at most {MAX_DRAWN} per image).</p>"
        f'<div class="samples">{figures}</div>'
    )


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>RF-DETR evaluation report</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
  background: #f4f6f9; color: #1f2933; }}
header {{ background: #1f2a44; color: white; padding: 18px 32px; }}
header h1 {{ margin: 0; font-size: 22px; }}
main {{ padding: 20px 32px 40px; max-width: 1400px; }}
h2 {{ font-size: 18px; margin: 28px 0 10px; border-bottom: 2px solid #d8dee6;
  padding-bottom: 4px; }}
.cards {{ display: flex; flex-wrap: wrap; gap: 12px; }}
.card {{ background: white; border-radius: 8px; padding: 12px 18px; min-width: 120px;
  box-shadow: 0 1px 3px rgba(0,0,0,.12); }}
.card .value {{ font-size: 26px; font-weight: 600; color: #1f4e8c; }}
.card .label {{ font-size: 13px; color: #5b6673; }}
.tables {{ display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }}
table {{ border-collapse: collapse; background: white; box-shadow: 0 1px 3px rgba(0,0,0,.12);
  font-size: 13px; }}
th, td {{ padding: 5px 10px; border-bottom: 1px solid #e6e9ee; text-align: left; }}
th.num {{ text-align: right; }}
th {{ background: #eef1f5; font-weight: 600; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.charts {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 16px; }}
figure {{ margin: 0; background: white; border-radius: 8px; padding: 10px;
  box-shadow: 0 1px 3px rgba(0,0,0,.12); }}
figure img {{ max-width: 100%; height: auto; display: block; margin: 0 auto; }}
figcaption {{ font-size: 12px; color: #5b6673; margin-top: 6px; text-align: center; }}
.samples {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr));
  gap: 14px; }}
.note {{ color: #5b6673; font-size: 13px; }}
</style></head>
<body>
<header><h1>RF-DETR evaluation report</h1></header>
<main>
<div class="cards">{cards}</div>
<h2>Run</h2>
<table class="meta">{meta}</table>
<div class="tables">
<div><h2>COCO metrics</h2><table>{summary}</table></div>
<div><h2>Per class</h2>
<p class="note">Precision, recall and F1 at confidence {threshold} (IoU 0.5, {iou_type});
"dataset id" is the class id in the dataset's own files.</p>
<table>{per_class}</table></div>
</div>
<h2>Charts</h2>
<div class="charts">{charts}</div>
{samples}
</main></body></html>
"""
