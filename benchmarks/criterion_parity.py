"""Numerical parity of our matcher + criterion with upstream rfdetr 1.11.2.

Both packages are called ``rfdetr``, so they never share a process: this script (run with our
interpreter) writes random model outputs and targets to a temporary directory, runs *itself* under
the upstream interpreter in worker mode (``--worker DIR``; a script's own folder, not the repo root,
is first on ``sys.path``, so ``import rfdetr`` finds the upstream package there), then computes our
losses on the same tensors and prints the largest absolute difference per loss key.

Random mask points: both sides seed torch's CPU generator identically right before the criterion
call and draw in the same order (matcher points for every layer, then loss points per layer), so
the segmentation cases compare the exact same sampled points.

Usage::

    .venv/bin/python benchmarks/criterion_parity.py [--upstream-python PATH]

``PATH`` defaults to ``/work/upstream-venv/bin/python`` (a venv with ``rfdetr==1.11.2``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

SEED = 1234
COMMON = {"num_classes": 5, "dec_layers": 3}
CASES: dict[str, dict[str, Any]] = {
    "det_g1": {"batch": 3, "groups": 1, "per_group": 12, "masks": None},
    "det_g13": {"batch": 4, "groups": 13, "per_group": 20, "masks": None},
    "det_g3_degenerate": {
        "batch": 2,
        "groups": 3,
        "per_group": 8,
        "masks": None,
        "degenerate": True,
    },
    "det_g3_num_boxes": {"batch": 2, "groups": 3, "per_group": 8, "masks": None, "num_boxes": 7.0},
    "det_eval_mode": {"batch": 2, "groups": 3, "per_group": 8, "masks": None, "eval": True},
    "seg_dense_g3": {"batch": 2, "groups": 3, "per_group": 10, "masks": "dense"},
    "seg_sparse_g3": {"batch": 2, "groups": 3, "per_group": 10, "masks": "sparse"},
}


def _boxes(n: int, gen: torch.Generator) -> torch.Tensor:
    centre = 0.2 + 0.6 * torch.rand(n, 2, generator=gen)
    size = 0.05 + 0.35 * torch.rand(n, 2, generator=gen)
    return torch.cat([centre, size], dim=1)


def _layer(spec: dict[str, Any], gen: torch.Generator) -> dict[str, Any]:
    b, q, k = spec["batch"], spec["queries"], COMMON["num_classes"] + 1
    boxes = _boxes(b * q, gen).view(b, q, 4)
    if spec.get("degenerate"):
        boxes[:, ::3, 2:] = 0.0  # zero-size predictions
    layer: dict[str, Any] = {
        "pred_logits": 2 * torch.randn(b, q, k, generator=gen),
        "pred_boxes": boxes,
    }
    if spec["masks"] == "dense":
        layer["pred_masks"] = 3 * torch.randn(b, q, 16, 16, generator=gen)
    elif spec["masks"] == "sparse":
        layer["pred_masks"] = {
            "spatial_features": torch.randn(b, 8, 16, 16, generator=gen),
            "query_features": torch.randn(b, q, 8, generator=gen),
            "bias": torch.tensor(0.1),
        }
    return layer


def _targets(spec: dict[str, Any], gen: torch.Generator) -> list[dict[str, torch.Tensor]]:
    targets = []
    for i in range(spec["batch"]):
        n = 0 if i == 1 else 1 + 2 * i  # image 1 has no objects
        target = {
            "labels": torch.randint(0, COMMON["num_classes"], (n,), generator=gen),
            "boxes": _boxes(n, gen),
        }
        if spec.get("degenerate") and n:
            target["boxes"][0, 2] = 0.0  # a zero-width ground-truth box
        if spec["masks"]:
            target["masks"] = _box_masks(target["boxes"], 64)
        targets.append(target)
    return targets


def _box_masks(boxes: torch.Tensor, size: int) -> torch.Tensor:
    grid = (torch.arange(size) + 0.5) / size
    x0, y0 = boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2
    x1, y1 = boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2
    inside_x = (grid[None] >= x0[:, None]) & (grid[None] <= x1[:, None])
    inside_y = (grid[None] >= y0[:, None]) & (grid[None] <= y1[:, None])
    return inside_y[:, :, None] & inside_x[:, None, :]


def make_case(name: str) -> dict[str, Any]:
    spec = dict(CASES[name])
    spec["queries"] = spec["groups"] * spec["per_group"]
    if spec.get("eval"):
        spec["queries"] = spec["per_group"]  # the model returns one group in eval mode
    gen = torch.Generator().manual_seed(SEED + list(CASES).index(name))
    outputs = _layer(spec, gen)
    outputs["aux_outputs"] = [_layer(spec, gen) for _ in range(COMMON["dec_layers"] - 1)]
    outputs["enc_outputs"] = _layer(spec, gen)
    return {"spec": spec, "outputs": outputs, "targets": _targets(spec, gen)}


def _final_layer(outputs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in outputs.items() if k not in ("aux_outputs", "enc_outputs")}


def _leaves(outputs: dict[str, Any]) -> list[torch.Tensor]:
    """Every prediction tensor, in a fixed order, for the gradient comparison."""
    found = []
    for layer in [_final_layer(outputs), *outputs["aux_outputs"], outputs["enc_outputs"]]:
        for key in sorted(layer):
            value = layer[key]
            found += [value[k] for k in sorted(value)] if isinstance(value, dict) else [value]
    return found


def _run(criterion: Any, case: dict[str, Any]) -> dict[str, Any]:
    spec, outputs, targets = case["spec"], case["outputs"], case["targets"]
    leaves = [leaf.requires_grad_() for leaf in _leaves(outputs)]
    criterion.train(not spec.get("eval"))
    group_detr = 1 if spec.get("eval") else spec["groups"]
    torch.manual_seed(SEED)
    indices = criterion.matcher(_final_layer(outputs), targets, group_detr=group_detr)
    torch.manual_seed(SEED)
    losses = criterion(outputs, targets, num_boxes=spec.get("num_boxes"))
    weights = criterion.weight_dict
    total = sum(losses[k] * w for k, w in weights.items() if k in losses)
    grads = torch.autograd.grad(total, leaves, allow_unused=True)
    flat = [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads, strict=True)]
    return {
        "grad": torch.cat([g.flatten() for g in flat]).detach(),
        "losses": {k: float(v.detach()) for k, v in losses.items()},
        "total": float(total.detach()),
        "weights": dict(weights),
        "indices": [(i.tolist(), j.tolist()) for i, j in indices],
    }


def upstream_worker(workdir: Path) -> None:
    """Runs under the upstream interpreter: upstream's own builder makes matcher and criterion."""
    from rfdetr.models.lwdetr import build_criterion_and_postprocessors

    cases = torch.load(workdir / "cases.pt", weights_only=True)
    results = {}
    for name, case in cases.items():
        spec = case["spec"]
        seg = spec["masks"] is not None
        args = SimpleNamespace(
            device="cpu", num_classes=COMMON["num_classes"], dec_layers=COMMON["dec_layers"],
            aux_loss=True, two_stage=True, group_detr=spec["groups"], segmentation_head=seg,
            focal_alpha=0.25, set_cost_class=2.0, set_cost_bbox=5.0, set_cost_giou=2.0,
            cls_loss_coef=1.0, bbox_loss_coef=5.0, giou_loss_coef=2.0,  # 1.0 for Seg too (1.11.2)
            mask_ce_loss_coef=5.0, mask_dice_loss_coef=5.0, mask_point_sample_ratio=16,
            ia_bce_loss=True, use_varifocal_loss=False, use_position_supervised_loss=False,
            sum_group_losses=False, num_select=100,
        )  # fmt: skip
        criterion, _ = build_criterion_and_postprocessors(args)
        results[name] = _run(criterion, case)
    from importlib.metadata import version

    import rfdetr

    results["__source__"] = f"rfdetr {version('rfdetr')} at {Path(rfdetr.__file__).parent}"
    torch.save(results, workdir / "upstream.pt")


def ours(case: dict[str, Any]) -> dict[str, Any]:
    from rfdetr.models.criterion import SetCriterion, build_weight_dict
    from rfdetr.models.matcher import HungarianMatcher

    spec = case["spec"]
    seg = spec["masks"] is not None
    losses = ["labels", "boxes", "cardinality"] + (["masks"] if seg else [])
    criterion = SetCriterion(
        num_classes=COMMON["num_classes"],
        matcher=HungarianMatcher(),
        weight_dict=build_weight_dict(COMMON["dec_layers"], segmentation=seg),
        losses=losses,
        group_detr=spec["groups"],
    )
    return _run(criterion, case)


def compare(name: str, up: dict[str, Any], me: dict[str, Any]) -> float:
    assert set(up["weights"].items()) == set(me["weights"].items()), f"{name}: weight dicts differ"
    assert set(up["losses"]) == set(me["losses"]), f"{name}: loss keys differ"
    same_matches = up["indices"] == me["indices"]
    diffs = {k: abs(up["losses"][k] - me["losses"][k]) for k in up["losses"]}
    worst = max(diffs.values())
    print(f"\n{name}: {len(diffs)} keys, final-layer matches identical: {same_matches}")
    for base in sorted({k.split("_enc")[0].rstrip("_0123456789") for k in diffs}):
        group = {k: v for k, v in diffs.items() if k.startswith(base)}
        key = max(group, key=group.get)
        value = up["losses"][key]
        print(f"  {base:<18} max |diff| {group[key]:.3e}  (worst key {key}, value {value:.5f})")
    total_diff = abs(up["total"] - me["total"])
    print(f"  {'weighted total':<18} |diff| {total_diff:.3e}  (value {up['total']:.4f})")
    grad_diff = float((up["grad"] - me["grad"]).abs().max())
    scale = float(up["grad"].abs().max())
    print(f"  {'d total / d preds':<18} max |diff| {grad_diff:.3e}  (max |grad| {scale:.4f})")
    return max(worst, total_diff / max(1.0, abs(up["total"])), grad_diff)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream-python", default="/work/upstream-venv/bin/python")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        upstream_worker(args.worker)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        cases = {name: make_case(name) for name in CASES}
        torch.save(cases, workdir / "cases.pt")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
        cmd = [args.upstream_python, "-W", "ignore", __file__, "--worker", str(workdir)]
        subprocess.run(cmd, check=True, env=env, cwd=tmp)
        upstream = torch.load(workdir / "upstream.pt", weights_only=True)
    import rfdetr

    print(f"upstream: {upstream.pop('__source__')}")
    print(f"ours:     rfdetr at {Path(rfdetr.__file__).parent}")
    worst = max(compare(name, upstream[name], ours(case)) for name, case in cases.items())
    print(f"\nworst difference over all cases and keys: {worst:.3e}")


if __name__ == "__main__":
    main()
