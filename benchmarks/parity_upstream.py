"""Numerical parity of our RF-DETR with the upstream package (rfdetr==1.11.2).

Upstream and this project are both imported as ``rfdetr``, so upstream runs in its own virtual
environment, in a subprocess: it builds each model with random weights (every tensor perturbed,
so no zero-initialised layer hides a difference), runs it in eval mode on a fixed random input,
and saves weights, input and outputs. This process loads those weights into our model, strictly,
runs the same input and prints the max absolute difference of logits, boxes and masks.

Usage:
    python benchmarks/parity_upstream.py [--upstream-venv DIR] [--sizes nano small seg-nano]

Without ``--upstream-venv`` the script creates ``.upstream-venv`` beside the repository with
``torch==2.14.1 torchvision==0.29.1 rfdetr==1.11.2`` (PyPI access needed once).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import torch

from rfdetr.config import get_preset
from rfdetr.models.build import build_model

UPSTREAM_CLASSES = {
    "nano": "RFDETRNano",
    "small": "RFDETRSmall",
    "medium": "RFDETRMedium",
    "large": "RFDETRLarge",
    "seg-nano": "RFDETRSegNano",
    "seg-small": "RFDETRSegSmall",
    "seg-medium": "RFDETRSegMedium",
}
TOLERANCE = 1e-4

UPSTREAM_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    import rfdetr
    cls_name, out_path = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    wrapper = getattr(rfdetr, cls_name)(pretrain_weights=None, device="cpu")
    net = wrapper.model.model.eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    res = wrapper.model_config.resolution
    images = torch.randn(2, 3, res, res)
    with torch.no_grad():
        out = net(images)
    saved = {"state_dict": net.state_dict(), "images": images,
             "pred_logits": out["pred_logits"], "pred_boxes": out["pred_boxes"]}
    if "pred_masks" in out:
        saved["pred_masks"] = out["pred_masks"]
    torch.save(saved, out_path)
    """
)


def ensure_upstream_venv(path: Path | None) -> Path:
    """Return the interpreter of a venv with rfdetr==1.11.2, creating it when needed."""
    venv = path or Path(__file__).resolve().parents[1] / ".upstream-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "torch==2.14.1", "torchvision==0.29.1"], check=True)
        subprocess.run([*pip, "rfdetr==1.11.2"], check=True)
    return python


def run_upstream(python: Path, cls_name: str, out: Path) -> dict:
    """Build, perturb and run an upstream model; return what it saved."""
    script = out.with_suffix(".py")
    script.write_text(UPSTREAM_SCRIPT)
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    subprocess.run([str(python), str(script), cls_name, str(out)], check=True, env=env)
    return torch.load(out, map_location="cpu", weights_only=True)


def compare(size: str, reference: dict) -> dict[str, float]:
    """Load upstream weights into our model (strict) and return max |difference| per output."""
    state = dict(reference["state_dict"])
    state.pop("_kp_active_mask", None)  # keypoint buffer of upstream's 1.11 models; unused here
    model = build_model(get_preset(size)).eval()
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        ours = model(reference["images"])
    keys = [k for k in ("pred_logits", "pred_boxes", "pred_masks") if k in reference]
    for key in keys:
        scale = reference[key].abs().max().item()
        logging.info("%s %s: max |upstream| = %.3g", size, key, scale)
    return {key: (ours[key] - reference[key]).abs().max().item() for key in keys}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream-venv", type=Path, default=None)
    parser.add_argument("--sizes", nargs="+", default=["nano", "small", "seg-nano"])
    args = parser.parse_args()
    python = ensure_upstream_venv(args.upstream_venv)
    torch.set_num_threads(2)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            reference = run_upstream(python, UPSTREAM_CLASSES[size], Path(tmp) / f"{size}.pt")
            diffs = compare(size, reference)
            worst = max(worst, *diffs.values())
            shown = "  ".join(f"{k}={v:.2e}" for k, v in diffs.items())
            print(f"{size:10s} max |ours - upstream|: {shown}")
    verdict = "PASS" if worst <= TOLERANCE else "FAIL"
    print(f"{verdict}: worst difference {worst:.2e} (tolerance {TOLERANCE:.0e})")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    raise SystemExit(main())
