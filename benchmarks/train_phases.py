"""Where the wall time of one ``model.train()`` call goes: ours vs upstream rfdetr 1.11.2.

The call is :mod:`train_wall`'s (Nano 192, 1 epoch of 32 synthetic images, batch 4 x
grad_accum 4, validation, random init, CPU, ``multi_scale=False`` unless ``--multi-scale``).
Each side runs in a fresh process in which a list of functions is wrapped by a timer; each
wrapped call pushes its phase on a stack and wall time is charged to the innermost phase only
(exclusive times), keyed by the whole stack (``train step > forward``), so a forward pass under
evaluation is told apart from one under training. What no wrapped function covers is ``other``.
Targets that do not exist on a side (``module:Class.method``) are listed and skipped.

Shares of the ``train()`` wall are robust to the load of a shared machine; seconds are not.

Usage::

    .venv/bin/python benchmarks/train_phases.py [--side ours|upstream|both] [--threads 2]
        [--multi-scale] [--amp-dtype bf16] [--upstream-python /work/upstream-venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import textwrap
from pathlib import Path

# (phase, target); a target is "module:attribute.path" of a function or method.
COMMON = [
    ("forward", "torch.nn.modules.module:Module._call_impl@model"),
    ("backward", "torch.autograd:backward"),
    ("grad clip", "torch.nn.utils:clip_grad_norm_"),
    ("matcher", "rfdetr.models.matcher:HungarianMatcher.forward"),
    ("torch.save", "torch:save"),
    ("next batch", "torch.utils.data.dataloader:_BaseDataLoaderIter.__next__"),
    ("optimizer", "torch.optim.adamw:AdamW.step"),
]
OURS = [
    ("datasets", "rfdetr.training.loop:build_datasets"),
    ("model prep", "rfdetr.training.loop:prepare_model"),
    ("session build", "rfdetr.training.loop:_build_session"),
    ("train step", "rfdetr.training.step:optimizer_step"),
    ("criterion", "rfdetr.models.criterion:SetCriterion.forward"),
    ("EMA update", "rfdetr.training.ema:ModelEMA.update"),
    ("evaluate split", "rfdetr.training.outputs:evaluate_split_models"),
    ("COCO metrics", "rfdetr.evaluation.coco:score_predictions"),
    ("best file", "rfdetr.training.outputs:_write_best"),
    ("checkpoint.pth", "rfdetr.checkpoints:save_training_checkpoint"),
    ("epoch plot", "rfdetr.evaluation.plots:plot_training_curves"),
    ("results+test", "rfdetr.training.loop:_summary"),
    ("read result", "rfdetr.training.outputs:TrainResult.from_run_dir"),
]
UPSTREAM = [
    ("datasets", "rfdetr.datasets:build_dataset"),
    ("train step", "rfdetr.training.module_model:RFDETRModelModule.training_step"),
    ("optimizer step", "rfdetr.training.module_model:RFDETRModelModule._step_optimizer"),
    ("criterion", "rfdetr.models.criterion:SetCriterion.forward"),
    ("EMA update", "rfdetr.training.callbacks.ema:RFDETREMACallback.on_train_batch_end"),
    ("validation step", "rfdetr.training.module_model:RFDETRModelModule.validation_step"),
    ("COCO metrics", "rfdetr.training.callbacks.coco_eval:"
     "COCOEvalCallback.on_validation_epoch_end"),
    ("best file", "rfdetr.training.callbacks.best_model:BestModelCallback.on_validation_end"),
    ("lightning ckpt", "pytorch_lightning.trainer.trainer:Trainer.save_checkpoint"),
    ("lightning fit", "pytorch_lightning.trainer.trainer:Trainer.fit"),
    ("test pass", "pytorch_lightning.trainer.trainer:Trainer.test"),
]  # fmt: skip

SIDE_SCRIPT = textwrap.dedent(
    """
    import collections, functools, importlib, json, sys, time
    import torch
    from rfdetr import RFDETRNano
    dataset, output, threads, amp, multi_scale, targets = sys.argv[1:7]
    torch.set_num_threads(int(threads))
    torch.manual_seed(0)
    model = RFDETRNano(pretrain_weights=None, device="cpu", resolution=192)
    totals, counts, stack, missing = collections.Counter(), collections.Counter(), [], []
    mark = [time.perf_counter()]

    def charge():
        now = time.perf_counter()
        totals[" > ".join(stack) or "other"] += now - mark[0]
        mark[0] = now

    def timed(phase, function, only_models=False):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            if only_models and type(args[0]).__name__ not in ("RFDETR", "LWDETR"):
                return function(*args, **kwargs)
            charge(); stack.append(phase); counts[" > ".join(stack)] += 1
            try:
                return function(*args, **kwargs)
            finally:
                charge(); stack.pop()
        return wrapper

    for phase, target in json.loads(targets):
        target, _, flag = target.partition("@")
        module_name, _, path = target.partition(":")
        try:
            owner = importlib.import_module(module_name)
            *parents, name = path.split(".")
            for part in parents:
                owner = getattr(owner, part)
            setattr(owner, name, timed(phase, getattr(owner, name), flag == "model"))
        except (ImportError, AttributeError):
            missing.append(target)
    options = dict(dataset_dir=dataset, epochs=1, batch_size=4, grad_accum_steps=4, lr=1e-4,
                   output_dir=output, device="cpu", tensorboard=False, num_workers=0,
                   multi_scale=multi_scale == "1")
    if amp != "fp32":
        options["amp_dtype"] = amp
    begin = mark[0] = time.perf_counter()
    model.train(**options)
    charge()
    wall = time.perf_counter() - begin
    print(json.dumps({"wall": wall, "totals": totals, "counts": counts, "missing": missing}))
    """
)


def run_side(python: str, ours: bool, dataset: Path, args: argparse.Namespace) -> dict:
    """One fresh process running the call with its phases timed; returns the JSON it prints."""
    from train_wall import run_script  # this folder is on sys.path when run as a script

    targets = COMMON + (OURS if ours else UPSTREAM)
    amp = args.amp_dtype if ours else "fp32"
    argv = [str(dataset), "", str(args.threads), amp, str(int(args.multi_scale))]
    return run_script(
        python, ours, SIDE_SCRIPT, [*argv, json.dumps(targets)], args.threads, '{"wall"'
    )


def print_side(name: str, reply: dict) -> None:
    """The phases by exclusive time, largest first, with their share of the wall."""
    wall = reply["wall"]
    print(f"\n{name}: train() wall {wall:.2f} s (load average {os.getloadavg()[0]:.2f})")
    if reply["missing"]:
        print(f"  not found (skipped): {', '.join(reply['missing'])}")
    for phase, seconds in sorted(reply["totals"].items(), key=lambda item: -item[1]):
        if seconds / wall >= 0.001:
            calls = reply["counts"].get(phase, "")
            print(f"  {seconds:8.2f} s {100 * seconds / wall:5.1f} %  {phase}  ({calls} calls)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=("ours", "upstream", "both"), default="both")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--multi-scale", action="store_true")
    parser.add_argument("--amp-dtype", default="fp32", help="ours only: fp32 or bf16")
    parser.add_argument("--upstream-python", default="/work/upstream-venv/bin/python")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from rfdetr.data.synthetic import make_shapes_dataset

    root = Path(tempfile.mkdtemp(prefix="rfdetr-phases-data-"))
    dataset = make_shapes_dataset(
        root, splits={"train": 32, "valid": 16, "test": 16}, image_size=192, seed=0
    )
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    if args.side in ("ours", "both"):
        print_side(f"ours {args.amp_dtype}", run_side(sys.executable, True, dataset, args))
    if args.side in ("upstream", "both"):
        print_side("upstream fp32", run_side(args.upstream_python, False, dataset, args))


if __name__ == "__main__":
    main()
