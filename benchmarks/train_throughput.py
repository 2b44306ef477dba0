"""Training-step throughput on the CPU: ours vs upstream rfdetr 1.11.2, interleaved.

One step = forward, loss (matcher + set criterion), backward, gradient clipping (0.1) and an
AdamW step with the layer-decay parameter groups, on a fixed random batch with the same targets
for both implementations. Both run as long-lived worker processes (the two packages are both
named ``rfdetr``) that take turns step by step, so background load on a shared machine hits
both alike. Settings are identical on both sides: the same size preset (all 13 query groups and
300 queries), resolution, batch, fp32, same number of threads.

Printed per resolution, for each side: images/s of the best step and of the median step, the
median CPU time per step (user + system, all threads; robust when other processes compete for
the cores) and peak RSS of the worker; the speed-up by best step time and by median CPU time;
and our step's FLOPs (``torch.utils.flop_counter.FlopCounterMode``) over the best step time,
against a square fp32 matmul peak measured in the same run; then a ``torch.profiler`` split of
one of our steps: the self time of the matmul/convolution ops (forward and backward), of fused
attention and of the rest, and the GFLOP/s achieved inside the matmul/convolution ops.
``--device cuda`` and ``--compile default|cudagraphs`` (``reduce-overhead``) serve
``benchmarks/gpu_suite.py`` (peak memory: ``torch.cuda.max_memory_allocated``).

``--upstream-python ''`` measures ours only. ``--allocator default`` runs our side without
:func:`rfdetr.training.runtime.tune_allocator`; ``--upstream-allocator tuned`` gives upstream it.

``--precision bf16`` runs our step as training does with ``amp_dtype: bf16`` (bf16 autocast,
fp32 losses, weights and optimizer), which upstream lacks on the CPU: ``--upstream-precision
bf16`` wraps upstream's forward and loss in the same autocast by hand. The FLOPs are then set
against a bf16 matmul peak.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

UPSTREAM_CLASSES = {"nano": "RFDETRNano", "small": "RFDETRSmall", "medium": "RFDETRMedium"}
NUM_CLASSES = 90
SEED = 0


def make_batch(resolution: int, batch: int) -> tuple[Any, list[dict[str, Any]]]:
    """The fixed images ``[B, 3, R, R]`` and targets (4 boxes per image, normalised cxcywh)."""
    import torch

    generator = torch.Generator().manual_seed(SEED)
    images = torch.randn(batch, 3, resolution, resolution, generator=generator)
    targets = []
    for _ in range(batch):
        centres = 0.25 + 0.5 * torch.rand(4, 2, generator=generator)
        sizes = 0.05 + 0.3 * torch.rand(4, 2, generator=generator)
        labels = torch.randint(0, NUM_CLASSES, (4,), generator=generator)
        targets.append({"labels": labels, "boxes": torch.cat([centres, sizes], 1)})
    return images, targets


def _compiled(model: Any, mode: str) -> Any:
    """``model`` as the step runs it: eager, or ``torch.compile`` (``cudagraphs``: CUDA graphs)."""
    import torch

    if mode == "none":
        return model
    return torch.compile(model, mode="reduce-overhead" if mode == "cudagraphs" else None)


def _ours(args: argparse.Namespace, resolution: int) -> Any:
    import torch

    from rfdetr.config import RunConfig
    from rfdetr.models.build import build_model
    from rfdetr.models.criterion import count_boxes, reduce_num_boxes
    from rfdetr.training.optim import build_optimizer
    from rfdetr.training.runtime import Precision, configure_tf32, tune_allocator
    from rfdetr.training.setup import build_criterion
    from rfdetr.training.step import accumulate_gradients

    device = torch.device(args.device)
    if args.allocator == "tuned":
        tune_allocator(device)
    configure_tf32(device)  # as fit() does: TF32 for the fp32 work on Ampere and later
    config = RunConfig.from_kwargs(
        args.size, dataset_dir="-", resolution=resolution, num_classes=NUM_CLASSES
    )
    torch.manual_seed(SEED)
    model = build_model(config.model).to(device).train()
    criterion = build_criterion(config).to(device).train()
    optimizer = build_optimizer(model, config.train, config.model, device)
    autocast = Precision(device.type, torch.bfloat16 if args.precision == "bf16" else None)
    forward = _compiled(model, args.compile)

    def step(images: Any, targets: list[dict[str, Any]]) -> None:
        normaliser = reduce_num_boxes(count_boxes(targets) * config.model.group_detr, images.device)
        accumulate_gradients(
            forward,
            criterion,
            images,
            targets,
            micro_batch=images.shape[0],
            num_boxes=normaliser,
            precision=autocast,
        )
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _upstream(args: argparse.Namespace, resolution: int) -> Any:
    import contextlib
    from types import SimpleNamespace

    import torch
    from rfdetr.models.lwdetr import build_criterion_and_postprocessors
    from rfdetr.training.param_groups import get_param_dict

    import rfdetr

    device, precision = args.device, args.precision  # this side's (see Worker)
    if args.allocator == "tuned" and device == "cpu":
        _tune_glibc()
    torch.manual_seed(SEED)
    wrapper = getattr(rfdetr, UPSTREAM_CLASSES[args.size])(
        pretrain_weights=None, device=device, resolution=resolution, num_classes=NUM_CLASSES
    )
    model = wrapper.model.model.to(device).train()
    forward = _compiled(model, args.compile)
    mc = wrapper.model_config
    args = SimpleNamespace(
        device=device, num_classes=NUM_CLASSES, dec_layers=mc.dec_layers, aux_loss=True,
        two_stage=True, group_detr=mc.group_detr, segmentation_head=False, focal_alpha=0.25,
        set_cost_class=2.0, set_cost_bbox=5.0, set_cost_giou=2.0, cls_loss_coef=1.0,
        bbox_loss_coef=5.0, giou_loss_coef=2.0, mask_ce_loss_coef=5.0, mask_dice_loss_coef=5.0,
        mask_point_sample_ratio=16, ia_bce_loss=True, use_varifocal_loss=False,
        use_position_supervised_loss=False, sum_group_losses=False, num_select=mc.num_select,
        lr=1e-4, lr_encoder=1.5e-4, weight_decay=1e-4, lr_vit_layer_decay=0.8,
        lr_component_decay=0.7, out_feature_indexes=mc.out_feature_indexes,
    )  # fmt: skip
    criterion, _ = build_criterion_and_postprocessors(args)
    criterion.to(device).train()
    optimizer = torch.optim.AdamW(get_param_dict(args, model), lr=1e-4, weight_decay=1e-4)
    weights = criterion.weight_dict

    def autocast() -> Any:
        if precision == "bf16":
            return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(images: Any, targets: list[dict[str, Any]]) -> None:
        with autocast():  # upstream runs its model and criterion under one autocast on CUDA
            losses = criterion(forward(images), targets)
            total = sum(losses[k] * weights[k] for k in losses if k in weights)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _tune_glibc() -> None:
    """The same malloc settings as ``rfdetr.training.runtime.tune_allocator`` (for upstream)."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-4, 0)  # M_MMAP_MAX
    libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD: a C int (2**62 would reach glibc as 0)


def _matmul_peak(threads: int, precision: str = "fp32", device: str = "cpu") -> float:
    """Best GFLOP/s of a square matmul in ``precision`` (2048^3 on the CPU, with the steps'
    thread count; 8192^3 on a GPU)."""
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    n = 8192 if device != "cpu" else 2048
    a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
    best = 0.0
    for _ in range(6):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


def _sync(device: str) -> None:
    if device != "cpu":
        import torch

        torch.cuda.synchronize()


# Self time of these ops is the step's matmul/convolution time: the leaf GEMM/conv kernels and
# their thin wrappers (self time excludes children, so nothing is counted twice).
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::linear",
              "aten::matmul", "aten::_addmm_activation")  # fmt: skip
CONV_PREFIXES = ("aten::conv", "aten::_conv", "aten::mkldnn_conv", "aten::cudnn_conv")
MATMUL_FLOP_OPS = ("mm", "addmm", "bmm", "baddbmm", "_addmm_activation", "convolution",
                   "_convolution", "convolution_backward")  # fmt: skip


def _profile(step: Any, images: Any, targets: Any, device: str) -> dict[str, float]:
    """Op-time split of one step (seconds) and the FLOPs of its matmul/convolution ops."""
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device != "cpu" else [])
    with profile(activities=activities) as prof:
        step(images, targets)
        _sync(device)
    split = {"matmul_s": 0.0, "attention_s": 0.0, "total_s": 0.0}
    for event in prof.key_averages():
        own = event.self_device_time_total if device != "cpu" else event.self_cpu_time_total
        seconds = own / 1e6
        split["total_s"] += seconds
        if event.key in MATMUL_OPS or event.key.startswith(CONV_PREFIXES):
            split["matmul_s"] += seconds
        elif "scaled_dot_product" in event.key or "flash_attention" in event.key:
            split["attention_s"] += seconds
    with FlopCounterMode(display=False) as counter:
        step(images, targets)
    counts = counter.get_flop_counts().get("Global", {})
    split["matmul_flops"] = float(
        sum(v for k, v in counts.items() if str(k).split(".")[-1] in MATMUL_FLOP_OPS)
    )
    split["flops"] = float(counter.get_total_flops())
    return split


def worker(kind: str, args: argparse.Namespace) -> None:
    """Serve ``step`` / ``profile`` / ``peak`` / ``rss`` requests on stdin, one
    JSON line each; a step that runs out of GPU memory replies ``{"error": ...}``."""
    import torch

    threads, resolution, batch, device = args.threads, args.resolutions[0], args.batch, args.device
    torch.set_num_threads(threads)
    step = (_ours if kind == "ours" else _upstream)(args, resolution)
    images, targets = make_batch(resolution, batch)
    images = images.to(device)
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = line.strip()
        reply: dict[str, Any]
        if command == "step":
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                step(images, targets)
                _sync(device)
            except torch.OutOfMemoryError:
                print(json.dumps({"error": "out of GPU memory"}), flush=True)
                return
            reply = {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}
        elif command == "profile":
            reply = _profile(step, images, targets, device)
        elif command == "peak":
            reply = {"gflops": _matmul_peak(threads, args.precision, device)}
        elif command == "rss":
            reply = {"rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}
            if device != "cpu":
                reply["gpu_peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
        else:
            return
        print(json.dumps(reply), flush=True)


class Worker:
    """A worker process and its request/reply pipe."""

    def __init__(
        self, python: str, kind: str, args: argparse.Namespace, resolution: int, wait: bool = True
    ) -> None:
        allocator = args.allocator if kind == "ours" else args.upstream_allocator
        precision = args.precision if kind == "ours" else args.upstream_precision
        command = [python, "-W", "ignore", str(Path(__file__).resolve()), "--worker", kind]
        command += ["--size", args.size, "--batch", str(args.batch), "--threads", str(args.threads)]
        command += ["--resolutions", str(resolution), "--allocator", allocator]
        command += ["--precision", precision, "--device", args.device, "--compile", args.compile]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        if kind == "ours":  # this checkout's rfdetr, not whichever one is installed
            env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
        # Passive OpenMP waiting: an idle worker's threads sleep instead of spinning, so they
        # neither slow the stepping worker down nor count as CPU time.
        env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(args.threads), OMP_WAIT_POLICY="PASSIVE")
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
            cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
        if wait:  # else the caller reads the "ready" line (workers then load in parallel)
            self.read()

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"worker exited with code {self.process.wait()}")

    def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
            self.process.wait(timeout=60)


def measure(args: argparse.Namespace, resolution: int) -> None:
    """Interleaved steps of both sides at one resolution; prints one block of figures."""
    sides = {"ours": Worker(sys.executable, "ours", args, resolution)}
    if args.upstream_python:
        sides["upstream"] = Worker(args.upstream_python, "upstream", args, resolution)
    times: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    for round_index in range(args.warmup + args.steps):
        for name, side in sides.items():
            reply = side.ask("step")
            if round_index >= args.warmup:
                times[name].append(reply["seconds"])
                cpu[name].append(reply["cpu_seconds"])
    split = sides["ours"].ask("profile")
    flops = split["flops"]
    peak = max(sides["ours"].ask("peak")["gflops"] for _ in range(2))
    print(
        f"\n{args.size} @ {resolution}, batch {args.batch}, {args.threads} threads, "
        f"ours {args.precision}, upstream {args.upstream_precision}:"
    )
    best, cpu_median = {}, {}
    for name, side in sides.items():
        rss = side.ask("rss")["rss_gb"]
        median, best[name] = statistics.median(times[name]), min(times[name])
        cpu_median[name] = statistics.median(cpu[name])
        print(
            f"  {name:9s} {args.batch / best[name]:6.2f} img/s best step ({best[name]:5.2f} s), "
            f"{args.batch / median:6.2f} img/s median ({median:5.2f} s), "
            f"{cpu_median[name]:5.2f} CPU-s/step, peak RSS {rss:5.2f} GB"
        )
        side.close()
    achieved = flops / best["ours"] / 1e9
    print(
        f"  ours: {flops / 1e9:.1f} GFLOP/step -> {achieved:.1f} GFLOP/s at the best step, "
        f"{100 * achieved / peak:.0f}% of the {peak:.1f} GFLOP/s {args.precision} matmul peak "
        "measured now"
    )
    total, matmul = split["total_s"], split["matmul_s"]
    in_matmul = split["matmul_flops"] / max(matmul, 1e-9) / 1e9
    print(
        f"  ours, one profiled step ({total:.2f} s of op time): matmul/conv ops "
        f"{100 * matmul / total:.1f}%, fused attention {100 * split['attention_s'] / total:.1f}%, "
        f"the rest {100 * (total - matmul - split['attention_s']) / total:.1f}%; the matmul/conv "
        f"ops ({100 * split['matmul_flops'] / flops:.0f}% of the FLOPs) run at {in_matmul:.1f} "
        f"GFLOP/s = {100 * in_matmul / peak:.0f}% of the peak"
    )
    if "upstream" in best:
        print(
            f"  speed-up upstream/ours: {best['upstream'] / best['ours']:.2f}x (best step time), "
            f"{cpu_median['upstream'] / cpu_median['ours']:.2f}x (median CPU time per step)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="nano", choices=sorted(UPSTREAM_CLASSES))
    parser.add_argument("--resolutions", type=int, nargs="+", default=[384, 192])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--upstream-python", default="/work/upstream-venv/bin/python")
    parser.add_argument("--allocator", choices=["tuned", "default"], default="tuned")
    parser.add_argument("--upstream-allocator", choices=["tuned", "default"], default="default")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--upstream-precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU")
    parser.add_argument("--compile", choices=["none", "default", "cudagraphs"], default="none")
    parser.add_argument("--worker", choices=["ours", "upstream"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args)
        return
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    for resolution in args.resolutions:
        measure(args, resolution)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
