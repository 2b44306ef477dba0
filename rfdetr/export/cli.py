"""``rfdetr export``: a checkpoint file in, a verified ONNX file out.

    rfdetr export --weights output/checkpoint_best_total.pth --output-dir exported \\
        [--size nano] [--opset 17] [--no-dynamic-batch] [--simplify] [--shape H W] \\
        [--with-postprocess] [--quantize int8 --calibration DATASET_DIR] [--format openvino]

Exit codes: 0 written and verified, 1 ONNX Runtime disagrees with PyTorch, 2 bad input.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register ``rfdetr export``."""
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX, verified against PyTorch with onnxruntime",
        description=(
            "Write OUTPUT_DIR/rfdetr-<size>.onnx from a checkpoint (class names, config and "
            "size come from the file), then run it with onnxruntime and PyTorch on random "
            "inputs (batch 1 and 2) and fail above 1e-4."
        ),
    )
    parser.add_argument("--weights", required=True, metavar="CKPT", help="checkpoint file")
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="folder to write")
    parser.add_argument("--size", default=None, help="model size when the file lacks it")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (17..20, default 17)")
    parser.add_argument(
        "--no-dynamic-batch", action="store_true", help="fix the batch axis (to --batch-size)"
    )
    parser.add_argument("--batch-size", type=int, default=1, help="the fixed batch (default 1)")
    parser.add_argument("--simplify", action="store_true", help="also write an onnxslim copy")
    parser.add_argument(
        "--shape", type=int, nargs=2, metavar=("H", "W"), help="input size (default: resolution)"
    )
    parser.add_argument(
        "--with-postprocess",
        action="store_true",
        help="add top-k post-processing: input orig_size, outputs boxes/scores/class_ids",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check")
    parser.add_argument(
        "--quantize", choices=["int8"], default=None, help="also write an int8 (QDQ) file"
    )
    parser.add_argument(
        "--calibration",
        metavar="DATASET_DIR",
        help="dataset of the model's classes: train images calibrate int8, valid images "
        "measure the export against fp32 (mAP50:95 delta, written beside the file)",
    )
    parser.add_argument(
        "--format", choices=["onnx", "openvino"], default="onnx", help="onnx or an OpenVINO IR"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``rfdetr export``; returns the exit code."""
    import logging

    from rfdetr.api import RFDETRModel

    if not getattr(args, "verbose", False):  # the summaries below say it once, on stdout
        logging.getLogger("rfdetr.export").setLevel(logging.WARNING)
    source = RFDETRModel.from_checkpoint(args.weights, size=args.size, device="cpu")
    result = source.export_files(
        args.output_dir,
        opset_version=args.opset,
        dynamic_batch=not args.no_dynamic_batch,
        batch_size=args.batch_size,
        simplify=args.simplify,
        shape=tuple(args.shape) if args.shape else None,
        with_postprocess=args.with_postprocess,
        verify=not args.no_verify,
        quantize=args.quantize,
        calibration=args.calibration,
        format=args.format,
    )
    for report in result.reports:
        print(report.summary())
    if result.accuracy is not None:
        print(result.accuracy.summary())
    meta = result.metadata
    weights = result.path.with_suffix(".bin") if result.path.suffix == ".xml" else result.path
    size_mb = weights.stat().st_size / 1e6
    print(
        f"wrote {result.path} ({size_mb:.1f} MB; {meta.task}, {len(meta.class_names)} classes, "
        f"input {meta.input_shape[0]}x{meta.input_shape[1]})"
    )
    return 0
