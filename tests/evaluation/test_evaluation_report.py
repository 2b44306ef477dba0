"""The report files: metrics.json, report.md, a self-contained report.html that renders."""

from __future__ import annotations

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
    assert "| 0 | 3 | $cash <b>& |" in paths["markdown"].read_text()
