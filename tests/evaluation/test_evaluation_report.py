"""The report files: metrics.json, report.md, a self-contained report.html that renders."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
_IMG_SRC = re.compile(r"<img\b[^>]*\bsrc=\"([^\"]*)\"")


def test_evaluation_report_files(evaluated_seg) -> None:
    report, result = evaluated_seg["report"], evaluated_seg["result"]
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["iou_type"] == "segm"
    assert set(metrics["bbox"]) == set(metrics["segm"]) >= {"map_50_95", "map_50", "ar_100"}
    assert [(c["category_id"], c["name"]) for c in metrics["per_class"]] == [(1, "cat"), (2, "dog")]
    assert {"confidence_threshold", "precision", "recall", "f1", "confusion_matrix"} <= set(metrics)
    assert np.asarray(metrics["confusion_matrix"]).shape == (3, 3)
    assert metrics["meta"]["split"] == "valid"
    assert metrics["bbox"] == result.bbox.to_dict()
    markdown = (report / "report.md").read_text()
    assert "| mAP 50:95 |" in markdown and "| mask AP50:95 |" in markdown
    assert "| 1 | 2 | dog | 4 |" in markdown
    for name in ("per_class_ap", "pr_curves", "f1_confidence", "confusion_matrix"):
        with Image.open(report / "plots" / f"{name}.png") as image:
            assert image.width > 300 and image.height > 200


def test_evaluation_report_html_is_self_contained(evaluated_seg) -> None:
    html = (evaluated_seg["report"] / "report.html").read_text()
    sources = _IMG_SRC.findall(html)
    assert len(sources) == 4 + 4  # four charts, four sample images (the whole valid split)
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert "http://" not in html and "https://" not in html and "<script" not in html
    for name in ("cat", "dog"):
        assert f">{name}<" in html
    assert "mask mAP 50:95" in html


def _chromium(*args: str, profile: Path, timeout: int = 90) -> subprocess.CompletedProcess:
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
def test_evaluation_report_renders_in_chromium(evaluated_seg, tmp_path: Path) -> None:
    """Screenshot: not blank. DOM after load: every image decoded, with its natural size."""
    report = evaluated_seg["report"] / "report.html"
    shot = tmp_path / "report.png"
    done = _chromium(
        f"--screenshot={shot}", "--window-size=1400,2600", report.as_uri(), profile=tmp_path / "p1"
    )
    assert shot.exists(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (2600, 1400)
    assert pixels.std() > 20  # a blank or unstyled page is nearly uniform
    # a probe copy records, once loaded, how each image decoded; --dump-dom prints the result
    probe = tmp_path / "probe.html"
    script = (
        "<script>window.addEventListener('load', () => document.querySelectorAll('img')"
        ".forEach(i => i.setAttribute('data-natural', i.complete && i.naturalWidth > 0 ? "
        "i.naturalWidth + 'x' + i.naturalHeight : 'broken')));</script></body>"
    )
    probe.write_text(report.read_text().replace("</body>", script))
    dom = _chromium(
        "--dump-dom", "--virtual-time-budget=10000", probe.as_uri(), profile=tmp_path / "p2"
    ).stdout
    sizes = re.findall(r'data-natural="([^"]+)"', dom)
    assert len(sizes) == 8, dom[-2000:]
    assert "broken" not in sizes
    for size in sizes:
        width, height = (int(v) for v in size.split("x"))
        assert width >= 200 and height >= 100


def test_evaluation_report_escapes_class_names(tmp_path, fixed_case) -> None:
    """Names are data: HTML-escaped in the page, literal (no math mode) in the charts."""
    from rfdetr.evaluation.coco import score_predictions
    from rfdetr.evaluation.report import write_report

    gt, predictions = fixed_case
    gt["categories"][0]["name"] = "$cash <b>&"
    result = score_predictions(gt, predictions, backend="pycocotools")
    paths = write_report(result, tmp_path / "report", meta={"model": "<hand-made>"})
    html = paths["html"].read_text()
    assert "$cash &lt;b&gt;&amp;" in html and "<b>&" not in html
    assert "&lt;hand-made&gt;" in html
    markdown = paths["markdown"].read_text()
    assert "<b>" not in markdown and "<hand-made>" not in markdown  # no raw HTML reaches KFP
    assert "| 0 | 3 | \\$cash &lt;b&gt;&amp; |" in markdown
    assert "&lt;hand\\-made&gt;" in markdown or "&lt;hand-made&gt;" in markdown


def test_markdown_report_is_safe_for_the_kfp_markdown_viewer(tmp_path, fixed_case) -> None:
    """KFP renders the Markdown output with markdown-to-jsx (kubeflow/pipelines
    frontend/src/components/viewers/MarkdownViewer.tsx, master): raw HTML in a class name must
    arrive as text, a newline in a name must not start a forged line, and the charts must be
    inline ``data:image`` URIs (markdown-to-jsx's sanitizer keeps ``data:image``, a relative
    ``plots/*.png`` has nothing to resolve against in the UI)."""
    from rfdetr.evaluation.coco import score_predictions
    from rfdetr.evaluation.report import KFP_MARKDOWN_LIMIT, write_report

    gt, predictions = fixed_case
    gt["categories"][1]["name"] = "dog\n# forged heading <img src=x onerror=alert(1)>"
    result = score_predictions(gt, predictions, backend="pycocotools")
    paths = write_report(result, tmp_path / "report", meta={"dataset": "a\r\n## forged"})
    markdown = paths["markdown"].read_text()
    assert not any(line.startswith(("# forged", "## forged")) for line in markdown.splitlines())
    assert "<img" not in markdown and "onerror" in markdown  # as text
    images = re.findall(r"!\[[^\]]*\]\(([^)]*)\)", markdown)
    assert len(images) == 4 and "](plots/" not in markdown
    keys = ("per_class_ap", "pr_curves", "f1_confidence", "confusion_matrix")
    for uri, key in zip(images, keys, strict=True):
        assert uri.startswith("data:image/png;base64,")
        assert base64.b64decode(uri.split(",", 1)[1]) == paths[key].read_bytes()
    assert len(markdown) <= KFP_MARKDOWN_LIMIT


def test_markdown_report_stays_within_the_kfp_viewer_limit(
    tmp_path, fixed_case, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MarkdownViewer.tsx truncates at MAX_MARKDOWN_STR_LENGTH (400,000 characters): charts that
    do not fit are named, with the file to open, instead of being cut mid-URI."""
    import os

    from rfdetr.evaluation import report as report_module
    from rfdetr.evaluation.coco import score_predictions

    big = os.urandom(150_000)  # ~200,000 base64 characters each
    charts = tuple((k, t, lambda _result: big) for k, t, _ in report_module._CHARTS)
    monkeypatch.setattr(report_module, "_CHARTS", charts)
    gt, predictions = fixed_case
    result = score_predictions(gt, predictions, backend="pycocotools")
    paths = report_module.write_report(result, tmp_path / "report")
    markdown = paths["markdown"].read_text()
    assert len(markdown) <= report_module.KFP_MARKDOWN_LIMIT
    assert markdown.count("data:image/png;base64,") == 1
    assert markdown.count("report.html") >= 3


def test_per_class_ap_of_a_class_absent_from_the_split_is_null(tmp_path, fixed_case) -> None:
    from rfdetr.evaluation.coco import score_predictions
    from rfdetr.evaluation.report import write_report

    gt, predictions = fixed_case
    gt["categories"].append({"id": 3, "name": "ghost", "source_id": 11})
    result = score_predictions(gt, predictions, backend="pycocotools")
    paths = write_report(result, tmp_path / "report")
    per_class = json.loads(paths["metrics"].read_text())["per_class"]
    ghost = next(c for c in per_class if c["name"] == "ghost")
    assert ghost["num_gt"] == 0 and ghost["ap_50_95"] is None and ghost["ap_50"] is None
    assert all(c["ap_50_95"] is not None for c in per_class if c["num_gt"] > 0)
    assert "| 3 | 11 | ghost | 0 | n/a | n/a |" in paths["markdown"].read_text()


def test_kfp_metrics_leave_out_classes_without_ground_truth(fixed_case) -> None:
    """A KFP Metrics value must be a number: a class absent from the split is left out rather
    than shown as AP -1 in the UI (issue 12, m3)."""
    from pipelines.steps.evaluate import flat_metrics
    from rfdetr.evaluation.coco import score_predictions

    gt, predictions = fixed_case
    result = score_predictions(gt, predictions, backend="pycocotools")
    figures = flat_metrics(result)
    assert "ap_50_95_bird" not in figures  # no bird in the split
    assert {"ap_50_95_cat", "ap_50_95_dog"} <= set(figures)
    assert all(v >= 0 for k, v in figures.items() if k.startswith("ap_50_95_"))
