"""``rfdetr eval``: COCO-evaluate a checkpoint on a dataset split and write the report."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from rfdetr.errors import UserError

if TYPE_CHECKING:
    from rfdetr.evaluation.coco import EvaluationResult


def add_parser(subparsers: Any) -> None:
    """Declare ``rfdetr eval`` on the top-level parser's sub-parsers."""
    parser = subparsers.add_parser(
        "eval",
        help="COCO-evaluate a checkpoint on a dataset split; write metrics and an HTML report",
        description=(
            "Run a checkpoint on one split of a COCO or YOLO dataset folder and score it with "
            "COCOeval (boxes, and masks for Seg models), per class against the dataset's own "
            "category ids. With --output-dir, write metrics.json, report.md and a self-contained "
            "report.html there. Exit code 2 when the checkpoint, the dataset or the split cannot "
            "be used, or the checkpoint's classes are not the dataset's."
        ),
    )
    parser.add_argument("--weights", required=True, metavar="CKPT", help="checkpoint file")
    parser.add_argument("--dataset-dir", required=True, metavar="DIR", help="dataset folder")
    parser.add_argument("--split", default="valid", help="valid (default), val, test or train")
    parser.add_argument("--output-dir", metavar="DIR", help="write the report files here")
    parser.add_argument(
        "--size", help="model size when the checkpoint does not record it (nano, seg-small...)"
    )
    parser.add_argument("--device", help="cuda, cuda:1, cpu...; default: CUDA when available")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    parser.add_argument("--num-workers", type=int, default=0, help="data loading processes")
    parser.add_argument(
        "--max-dets", type=int, default=500, help="detections per image counted (default 500)"
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "pycocotools", "faster-coco-eval"),
        default="auto",
        help="COCOeval implementation (auto: faster-coco-eval when installed)",
    )
    parser.add_argument("--samples", type=int, default=12, help="images drawn in the report")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate; print a summary (or JSON). Bad input raises a :class:`UserError`."""
    from rfdetr.evaluation.api import evaluate

    if args.batch_size < 1 or args.max_dets < 100 or args.samples < 0:
        raise UserError("--batch-size must be >= 1, --max-dets >= 100, --samples >= 0")
    result = evaluate(
        args.weights,
        args.dataset_dir,
        split=args.split,
        output_dir=args.output_dir,
        size=args.size,
        device=args.device,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        max_dets=args.max_dets,
        backend=args.backend,
        num_samples=args.samples,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print("\n".join(summary_lines(result, args.output_dir)))
    return 0


def summary_lines(result: EvaluationResult, output_dir: str | None) -> list[str]:
    """The human-readable summary printed by ``rfdetr eval``."""
    from rfdetr.evaluation.report import fmt

    lines = [f"images: {result.num_images}"]
    for name, metrics in (("box", result.bbox), ("mask", result.segm)):
        if metrics is not None:
            lines.append(
                f"{name}: mAP50:95 {fmt(metrics.map_50_95)}  mAP50 {fmt(metrics.map_50)}  "
                f"mAP75 {fmt(metrics.map_75)}  AR@100 {fmt(metrics.ar_100)}"
            )
    lines.append(
        f"best confidence {result.confidence_threshold:.2f}: precision {fmt(result.precision)}  "
        f"recall {fmt(result.recall)}  F1 {fmt(result.f1)}"
    )
    lines.append(f"  {'dataset id':>10}  {'name':<20} {'objects':>7} {'AP50:95':>8} {'AP50':>7}")
    for c in result.per_class:
        ap, ap50 = (c.mask_ap_50_95, c.mask_ap_50) if result.segm else (c.ap_50_95, c.ap_50)
        lines.append(
            f"  {c.category_id:>10}  {c.name:<20} {c.num_gt:>7} {fmt(ap):>8} {fmt(ap50):>7}"
        )
    if output_dir:
        lines.append(f"report: {output_dir}/report.html")
    return lines
