"""Charts of an :class:`~rfdetr.evaluation.coco.EvaluationResult` (PNG bytes) and of a training
run (:func:`plot_training_curves`).

Figures are made without pyplot (``Figure`` + an Agg canvas): no global backend switch, no
display needed, nothing left open. Class colours are supervision's, as in the sample images.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import supervision as sv
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from rfdetr.evaluation.coco import EvaluationResult

DPI = 110
_CENTERED = {"ha": "center", "va": "center", "fontsize": 8}
_LEGEND_MAX = 15  # classes named in a legend; beyond that the legend would hide the chart


def class_color(class_id: int) -> str:
    """Hex colour of a class: supervision's default palette, as in the sample images."""
    return sv.ColorPalette.DEFAULT.by_idx(class_id).as_hex()


def _text(name: str) -> str:  # a "$" would start matplotlib's math mode
    return name.replace("$", r"\$")


def _figure(width: float, height: float, columns: int = 1) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, columns)


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def _style(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=11, fontweight="bold", loc="left")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def per_class_ap_chart(result: EvaluationResult) -> bytes:
    """Horizontal bars of AP50:95 and AP50 per class (mask AP for Seg models), best first."""
    segm = result.segm is not None
    rows = []
    for c in result.per_class:
        ap, ap50 = (c.mask_ap_50_95, c.mask_ap_50) if segm else (c.ap_50_95, c.ap_50)
        rows.append((c, max(ap or 0.0, 0.0), max(ap50 or 0.0, 0.0), c.num_gt == 0))
    rows.sort(key=lambda r: (r[1], r[2]))
    height = max(4.6, 0.32 * len(rows) + 1.2)
    fig, ax = _figure(8, height)
    y = np.arange(len(rows))
    ax.barh(y + 0.2, [r[2] for r in rows], height=0.4, color="#c9d6e8", label="AP50")
    colors = [class_color(r[0].class_id) for r in rows]
    ax.barh(y - 0.2, [r[1] for r in rows], height=0.4, color=colors, label="AP50:95")
    for i, (_, ap, ap50, empty) in enumerate(rows):
        text = "no ground truth" if empty else f"{ap:.3f} / {ap50:.3f}"
        ax.text(max(ap, ap50) + 0.01, i, text, va="center", fontsize=8)
    ax.set_yticks(y, [f"{_text(r[0].name)} ({r[0].category_id})" for r in rows], fontsize=9)
    ax.set_xlim(0, 1.15)
    kind = "mask" if segm else "box"
    _style(ax, f"Per-class {kind} AP (AP50:95 / AP50)", "AP", "")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def pr_curves_chart(result: EvaluationResult) -> bytes:
    """Precision-recall curves at IoU 0.5, one per class with ground truth, plus their mean."""
    curves = result.curves
    recall = np.asarray(curves.recall_points)
    fig, ax = _figure(7, 5)
    valid = []
    for c, precision in zip(result.per_class, curves.pr_precision, strict=True):
        values = np.asarray(precision)
        if c.num_gt == 0 or np.all(values < 0):
            continue
        valid.append(np.clip(values, 0, None))
        label = f"{_text(c.name)} (AP50 {max(values.mean(), 0):.3f})"
        ax.plot(recall, valid[-1], color=class_color(c.class_id), lw=1.4, alpha=0.85, label=label)
    if valid:
        mean = np.mean(valid, axis=0)
        ax.plot(recall, mean, color="black", lw=2.6, label=f"all classes (mAP50 {mean.mean():.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    _style(ax, f"Precision-recall at IoU 0.5 ({result.iou_type})", "recall", "precision")
    handles, labels = ax.get_legend_handles_labels()
    if len(valid) > _LEGEND_MAX:  # too many classes to name: keep only the mean line's entry
        handles, labels = handles[-1:], labels[-1:]
    ax.legend(handles, labels, loc="lower left", fontsize=8)
    return _png(fig)


def f1_confidence_chart(result: EvaluationResult) -> bytes:
    """Macro F1, precision and recall versus confidence, the chosen threshold marked."""
    curves = result.curves
    thresholds = np.asarray(curves.thresholds)
    fig, ax = _figure(7, 4.5)
    shown = [c for c in result.per_class if c.num_gt > 0]
    for c in shown if len(shown) <= _LEGEND_MAX else []:
        f1 = curves.class_f1[c.class_id]
        ax.plot(thresholds, f1, color=class_color(c.class_id), lw=0.9, alpha=0.45)
    ax.plot(thresholds, curves.macro_precision, color="#4c78a8", lw=1.5, ls="--", label="precision")
    ax.plot(thresholds, curves.macro_recall, color="#f58518", lw=1.5, ls="--", label="recall")
    ax.plot(thresholds, curves.macro_f1, color="black", lw=2.6, label="F1 (macro)")
    best = result.confidence_threshold
    ax.axvline(best, color="#e45756", lw=1.5)
    ax.scatter([best], [result.f1], color="#e45756", zorder=5, s=40)
    # the note sits in the upper corner away from the marker, so it never leaves the axes
    right = best < 0.5
    ax.text(
        0.97 if right else 0.03,
        0.96,
        f"best threshold {best:.2f}\nF1 {result.f1:.3f}   precision {result.precision:.3f}   "
        f"recall {result.recall:.3f}",
        transform=ax.transAxes,
        ha="right" if right else "left",
        va="top",
        fontsize=9,
        bbox={"boxstyle": "round", "fc": "white", "ec": "#e45756"},
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    _style(ax, "F1 versus confidence threshold (IoU 0.5)", "confidence threshold", "score")
    ax.legend(loc="lower left" if right else "lower right", fontsize=8)
    return _png(fig)


def confusion_matrix_chart(result: EvaluationResult) -> bytes:
    """Heat map of the confusion matrix (colour: share of the row), counts written in cells."""
    matrix = np.asarray(result.confusion_matrix, dtype=np.float64)
    labels = [*(_text(n) for n in result.class_names), "background"]
    n = len(labels)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    side = min(max(4.5, 0.45 * n + 2.5), 30)
    fig, ax = _figure(side + 1, side)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=9)
    ax.set_yticks(range(n), labels, fontsize=9)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    color = "white" if share[i, j] > 0.55 else "black"
                    ax.text(j, i, str(int(matrix[i, j])), color=color, **_CENTERED)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    title = f"Confusion matrix at confidence {result.confidence_threshold:.2f}, IoU 0.5"
    ax.set_title(title, fontsize=11, fontweight="bold", loc="left")
    return _png(fig)


def _series(records: Sequence[dict[str, Any]], keys: tuple[str, ...]) -> tuple[list, list]:
    """(epochs, values) of the first of ``keys`` with a finite number in some record."""
    xs: list[float] = []
    ys: list[float] = []
    for key in keys:
        for i, record in enumerate(records):
            value = record.get(key)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if number and math.isfinite(value):
                epoch = record.get("epoch", i)
                xs.append(float(epoch) if isinstance(epoch, (int, float)) else float(i))
                ys.append(float(value))
        if xs:
            break
    return xs, ys


# (title, y label, {legend label: record keys}): the first key present draws the line, so logs
# that name the loss "loss" or "train_loss" both draw.
_PANELS: tuple[tuple[str, str, dict[str, tuple[str, ...]]], ...] = (
    ("Loss", "loss", {"train": ("train_loss", "loss"), "validation": ("val_loss", "test_loss")}),
    (
        "mAP on the validation split",
        "mAP",
        {
            "regular mAP50:95": ("map_50_95", "val_map_50_95"),
            "EMA mAP50:95": ("ema_map_50_95", "val_ema_map_50_95"),
            "regular mask mAP50:95": ("segm_map_50_95", "val_segm_map_50_95"),
            "EMA mask mAP50:95": ("ema_segm_map_50_95", "val_ema_segm_map_50_95"),
            "regular mAP50": ("map_50", "val_map_50"),
            "EMA mAP50": ("ema_map_50", "val_ema_map_50"),
        },
    ),
    ("Learning rate", "lr", {"lr": ("lr",)}),
)


def plot_training_curves(records: list[dict[str, Any]], path: Path) -> Path:
    """Write the per-epoch training figure (``metrics_plot.png``) and return ``path``.

    Args:
        records: one dict per epoch, as logged: ``epoch``, ``train_loss`` (or ``loss``),
            ``lr``, ``map_50_95`` and ``ema_map_50_95`` (or the training log's ``val_`` /
            ``val_ema_`` keys), optionally ``val_loss``, ``map_50``, ``ema_map_50`` and the
            ``segm_`` mask mAPs. Missing, None or non-finite values are skipped; a panel
            without data says so.
        path: the PNG to write (parent folders are created).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = _figure(15, 4.2, columns=3)
    for ax, (title, ylabel, keys) in zip(axes, _PANELS, strict=True):
        drawn = False
        for label, aliases in keys.items():
            xs, ys = _series(records, aliases)
            if not xs:
                continue
            drawn = True
            style = ":" if "mask" in label else "--" if label.endswith("mAP50") else "-"
            marker = "o" if len(xs) < 30 else None
            ax.plot(xs, ys, marker=marker, ms=3, lw=1.6, ls=style, label=label)
        _style(ax, title, "epoch", ylabel)
        if ylabel == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path
